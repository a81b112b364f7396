"""Taking over a dead worker's messages as soon as its heartbeat has lapsed.

A live worker renews its registry entry every heartbeat; the entry expires on the Redis
server's clock after ``missed_heartbeats`` intervals without one. A consumer of the group
whose entry is gone is a dead worker (or one cut off from Redis for that long, which has
cancelled its tasks by then: see :mod:`shadows.heartbeat`), so its pending messages can
be claimed at once instead of after the redelivery timeout. The check and the claim are
one script: a worker that beats again in between keeps its messages.

After a Redis pause longer than the window, every entry lapses at once; a worker only
takes over once its own entry has been there for a whole window (counted in its beats:
no clock involved), which gives every live worker the time to beat again first. The
redelivery timeout (XAUTOCLAIM) stays as the backstop for a worker that beats but no
longer makes progress.

Consumers are forgotten (XGROUP DELCONSUMER) only when the script confirms they hold
nothing: deleting a consumer drops its pending messages from the group for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shadows.core.backend import Backend
from shadows.core.keys import WORKER_GROUP, Keys

#: Pending messages: (id, fields or ``None`` when deleted meanwhile).
Entry = tuple[bytes | str, Mapping[bytes, bytes] | None]

# Claims up to ``count`` pending messages of ``owner`` into ``claimed``, as {id, fields,
# deliveries}; an entry deleted while pending is acknowledged. Returns the count left.
_CLAIM_FROM = r"""
local function claim_from(stream, group, consumer, owner, count, claimed)
  local pending = redis.call('XPENDING', stream, group, '-', '+', count, owner)
  for _, entry in ipairs(pending) do
    local id = entry[1]
    local got = redis.call('XCLAIM', stream, group, consumer, 0, id)
    if #got > 0 and got[1] then
      claimed[#claimed + 1] = {got[1][1], got[1][2], tonumber(entry[4]) + 1}
      count = count - 1
    else
      redis.call('XACK', stream, group, id)
    end
  end
  return count
end
"""

# KEYS: stream, this worker's registry hash, then the registry hash of each consumer
# ARGV: group, this consumer, its instance token, beats in a window, most messages to
#       claim, then the name of each consumer (in the order of their hashes)
# Claims the pending messages of consumers whose registry entry is gone, if this worker
# is listed under its token and has been for a whole window (as many beats). Returns {}
# or, per message, {id, fields, deliveries}; entries deleted while pending are
# acknowledged.
TAKEOVER = (
    _CLAIM_FROM
    + r"""
local stream, mine = KEYS[1], KEYS[2]
local group, consumer, token = ARGV[1], ARGV[2], ARGV[3]
local window, count = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HGET', mine, 'token') ~= token then return {} end
if tonumber(redis.call('HGET', mine, 'beats') or '0') < window then return {} end
local claimed = {}
for i = 3, #KEYS do
  if count <= 0 then break end
  local owner = ARGV[3 + i]
  if owner ~= consumer and redis.call('EXISTS', KEYS[i]) == 0 then
    count = claim_from(stream, group, consumer, owner, count, claimed)
  end
end
return claimed
"""
)

# KEYS: stream (of a shard i > 0)
# ARGV: group, consumer, most messages to claim, then the name of each lapsed consumer
# TAKEOVER for a shard whose stream has another hash tag than the registry: the caller
# checked the registry just before (one round trip earlier, not atomically: a worker
# whose entry lapsed has fenced its tasks by then, see shadows.worker.heartbeat).
TAKEOVER_SHARD = (
    _CLAIM_FROM
    + r"""
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local claimed = {}
for i = 4, #ARGV do
  if count <= 0 then break end
  local owner = ARGV[i]
  if owner ~= consumer then
    count = claim_from(stream, group, consumer, owner, count, claimed)
  end
end
return claimed
"""
)

# KEYS: stream
# ARGV: group, consumer
# Deletes the consumer only if it holds no pending message. Returns 1 when deleted.
FORGET = r"""
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok then return 0 end
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def forget_consumer(shadow: Backend, consumer: str) -> bool:
    """Delete ``consumer`` from the group if, atomically, it holds nothing."""
    script = shadow.client.register_script(FORGET)
    return bool(await script(keys=[shadow.keys.stream], args=[WORKER_GROUP, consumer]))


class Takeover:
    """Looks for lapsed consumers' messages every ``every`` seconds."""

    def __init__(
        self,
        shadow: Backend,
        consumer: str,
        token: Callable[[], str],
        window_ms: int,
        beats_per_window: int,
    ) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self._token = token
        self.beats_per_window = beats_per_window
        #: Often enough that a dead worker's messages start within a second of its lapse.
        self.every = min(0.5, max(window_ms / 4000, 0.01))
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    async def claim(
        self, free: int, using: Redis | None = None, shard: Backend | None = None
    ) -> list[tuple[Entry, int]]:
        """Up to ``free`` messages of lapsed consumers, with their delivery counts;
        ``using``: a client without automatic retries (a retried claim delivers again);
        ``shard``: the shadow with the keys of the shard to look at (else the home one)."""
        self._last = time.monotonic()
        client = self.shadow.client if using is None else using
        keys = (shard or self.shadow).keys
        summary = await client.xpending(keys.stream, WORKER_GROUP)
        owners = [
            _text(row["name"])
            for row in summary.get("consumers") or []
            if int(row["pending"]) and _text(row["name"]) != self.consumer
        ]
        if not owners:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(keys.worker(owner))
            listed = await pipe.execute()
        lapsed = [owner for owner, there in zip(owners, listed, strict=True) if not there]
        if not lapsed:
            return []
        if keys.shard:
            return await self._claim_shard(client, keys, lapsed, free)
        script = client.register_script(TAKEOVER)
        rows: list[Any] = await script(
            keys=[keys.stream, keys.worker(self.consumer), *map(keys.worker, lapsed)],
            args=[
                WORKER_GROUP,
                self.consumer,
                self._token(),
                self.beats_per_window,
                free,
                *lapsed,
            ],
        )
        return [((row[0], _pairs(row[1])), int(row[2])) for row in rows]

    async def _claim_shard(
        self, client: Redis | RedisCluster, keys: Keys, lapsed: list[str], free: int
    ) -> list[tuple[Entry, int]]:
        """TAKEOVER on a shard i > 0: the registry checks first, then the claim."""
        token, beats = await client.hmget(keys.worker(self.consumer), ["token", "beats"])
        if _text(token or b"") != self._token() or int(beats or 0) < self.beats_per_window:
            return []
        script = client.register_script(TAKEOVER_SHARD)
        rows: list[Any] = await script(
            keys=[keys.stream], args=[WORKER_GROUP, self.consumer, free, *lapsed]
        )
        return [((row[0], _pairs(row[1])), int(row[2])) for row in rows]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
