"""Noticing that Redis lost the shadow's data, and putting back what the workers know.

A Redis restarted without persistence (or flushed, or failed over to an empty replica)
answers as if nothing had happened: the acknowledgement of a message it no longer has
looks like a retried call's, so the retry or the next perpetual run of a task that was
running is silently dropped, and automatic tasks stop until a worker restarts.

The first worker to look writes a random token under ``{name}:epoch`` (each shard has
its own, so one node of a cluster can lose its data alone); every worker
remembers it and checks it every heartbeat interval (and at once when the consumer group
is missing, or an acknowledgement finds its message gone). A token missing or different
means the data was lost since the last look. The worker that notices first (it writes the
new token) logs the loss as an error; every worker then:

* restores the run records of the tasks it is running (state ``running``, their message
  id under ``restored``), so that nobody adds their keys anew meanwhile and COMPLETE
  settles them as usual when they end: their retries, next perpetual runs and successors
  are placed again (such a record expires ``ttl`` after the worker stops refreshing it);
* seeds the automatic tasks again, first due one heartbeat interval later so that every
  live worker has restored its running keys before they can start (no overlap with a
  run of the same key still going on another worker).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shadows.behaviours.base import plan_for
from shadows.behaviours.perpetual import Perpetual
from shadows.core.cancellation import CancelGuard
from shadows.core.execution import Message, now_ms
from shadows.core.reconnect import CONNECTION_ERRORS

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.worker")

#: The token expires once no worker has looked at it for a day (a shadow nobody serves
#: any more leaves nothing behind); a worker's first look after that writes a new one.
EPOCH_TTL_MS = 24 * 3600 * 1000

# KEYS: epoch, then the run key of each task the worker is running
# ARGV: the token this worker knows ('' before its first look), a new token, worker name,
#       now_ms, ttl_ms, refresh (1 when the worker has restored records), the token's
#       expiry in ms (renewed by every look), then the message id of each run key
# Returns {looked, token}: looked is 0 when the token is the one known (or on a first
# look), 1 when the data was lost and another worker wrote the new token, 2 when this
# call wrote it. After a loss, restores the run records of the given tasks (unless their
# keys are in use again); else, with refresh, extends the expiry of the ones it restored.
CHECK = r"""
local epoch, known, fresh, worker = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local now, ttl, refresh = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local current = redis.call('GET', epoch)
local looked = 0
if not current then
  redis.call('SET', epoch, fresh)
  current = fresh
  if known ~= '' then looked = 2 end
elseif current ~= known and known ~= '' then
  looked = 1
end
redis.call('PEXPIRE', epoch, ARGV[7])
for i = 2, #KEYS do
  local run, id = KEYS[i], ARGV[6 + i]
  if looked > 0 then
    if redis.call('EXISTS', run) == 0 then
      redis.call('HSET', run, 'state', 'running', 'worker', worker, 'started', now,
                 'message', id, 'restored', id)
      redis.call('PEXPIRE', run, ttl)
    end
  elseif refresh == '1' and redis.call('HGET', run, 'restored') == id
      and redis.call('HGET', run, 'worker') == worker then
    redis.call('PEXPIRE', run, ttl)
  end
end
return {looked, current}
"""

# KEYS: the run key of each task whose record CHECK restored but that was settled anyway
# ARGV: worker name, then the message id of each run key
# Deletes the records still as restored (a settlement after the restore clears the mark).
RELEASE = r"""
for i, run in ipairs(KEYS) do
  if redis.call('HGET', run, 'restored') == ARGV[i + 1]
      and redis.call('HGET', run, 'worker') == ARGV[1] then
    redis.call('DEL', run)
  end
end
return #KEYS
"""


class Continuity:
    """One worker's watch on the shadow's data (see the module's documentation)."""

    def __init__(
        self,
        shadow: Shadow,
        consumer: str,
        interval: float,
        ttl: float,
        running: Callable[[], list[Message]],
        reseed: Callable[[datetime], Awaitable[None]],
    ) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self.interval = interval
        self.ttl_ms = max(1, int(ttl * 1000))
        self._running = running
        self._reseed = reseed
        #: How many shards to watch (each has its own epoch).
        self.shards: Callable[[], int] = lambda: 1
        #: Messages whose acknowledgement already settled (a set this watch prunes).
        self.settled: Callable[[], set[str]] = set
        #: The token this worker knows, by shard.
        self._tokens: dict[int, str] = {}
        #: Messages (refs) whose run records this worker restored (refreshed while they
        #: run).
        self._restored: set[str] = set()
        #: How many losses of the data this worker has noticed.
        self.losses = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._script: AsyncScript | None = None
        self._release: AsyncScript | None = None

    def wake(self) -> None:
        """Look now (the consumer group is missing, a message vanished)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Look every interval until ``stopping``; outages only delay a look."""
        guard = CancelGuard()
        while not stopping.is_set():
            guard.check()
            self._wake.clear()
            try:
                await self.check()
            except CONNECTION_ERRORS as error:
                logger.debug("Cannot check the shadow's data: %s", error)
            except Exception as error:
                logger.warning(
                    "Cannot check the shadow's data: %s: %s", type(error).__name__, error
                )
            waiters = {
                asyncio.ensure_future(stopping.wait()),
                asyncio.ensure_future(self._wake.wait()),
            }
            try:
                await asyncio.wait(
                    waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def check(self) -> bool:
        """Look at the token once; ``True`` when the data was lost since the last look
        (the running tasks' records are then restored and automatic tasks seeded)."""
        async with self._lock:
            return await self._check()

    async def _check(self) -> bool:
        running = self._running()
        self._restored &= {message.ref for message in running}
        self.settled().intersection_update(message.ref for message in running)
        lost = 0
        for shard in range(self.shards()):
            mine = [message for message in running if message.shard == shard]
            looked = await self._check_shard(shard, mine)
            if looked:
                lost = max(lost, looked)
                mine = await self._release_settled(shard, mine)
                self._restored |= {message.ref for message in mine}
        if not lost:
            return False
        self.losses += 1
        described = (
            "Redis lost the data of shadow %s (restarted without persistence, flushed, or "
            "failed over to an empty replica): the work it held is gone; worker %s restores "
            "its %d running task(s) and seeds the automatic tasks again"
        )
        if lost == 2:
            logger.error(described, self.shadow.name, self.consumer, len(running))
        else:
            logger.warning(described, self.shadow.name, self.consumer, len(running))
        await self._reseed(datetime.now(UTC) + timedelta(seconds=self.interval))
        return True

    async def _release_settled(self, shard: int, restored: list[Message]) -> list[Message]:
        """Delete the restored records of the tasks that ended while CHECK was on its way
        (it can wait out a reconnection): one settled in Redis before the data was lost
        leaves no settlement to come, and its record would keep its key in use (an
        automatic task then not seeded again) until it expires. Returns the others."""
        running = {message.ref for message in self._running()}
        settled = self.settled()
        ended = [m for m in restored if m.ref not in running or m.ref in settled]
        if ended:
            if self._release is None:
                self._release = self.shadow.client.register_script(RELEASE)
            keys = self.shadow.keys.of_shard(shard)
            await self._release(
                keys=[keys.run(message.key) for message in ended],
                args=[self.consumer, *(message.message_id for message in ended)],
            )
        gone = {message.ref for message in ended}
        return [message for message in restored if message.ref not in gone]

    async def _check_shard(self, shard: int, running: list[Message]) -> int:
        """CHECK on one shard's epoch (each shard's node can lose its data alone)."""
        if self._script is None:
            self._script = self.shadow.client.register_script(CHECK)
        keys = self.shadow.keys.of_shard(shard)
        looked, token = await self._script(
            keys=[keys.epoch, *(keys.run(message.key) for message in running)],
            args=[
                self._tokens.get(shard, ""),
                secrets.token_hex(8),
                self.consumer,
                now_ms(),
                self.ttl_ms,
                1 if any(message.ref in self._restored for message in running) else 0,
                EPOCH_TTL_MS,
                *(message.message_id for message in running),
            ],
        )
        self._tokens[shard] = token.decode() if isinstance(token, bytes) else str(token)
        return int(looked)


async def seed_automatic_tasks(shadow: Shadow, not_before: datetime | None = None) -> None:
    """Start the chain of every automatic perpetual task that is not scheduled, queued or
    running yet (an add under the task's name: idempotent across workers)."""
    now = datetime.now(UTC)
    for name, function in list(shadow.tasks.items()):
        perpetual = plan_for(function).find(Perpetual)
        if perpetual is None or not perpetual.automatic:
            continue
        when = perpetual.first_run(now)
        if not_before is not None and when < not_before:
            when = not_before
        try:
            await shadow.add(function, when=when, key=name)()
        except TypeError as error:
            logger.error("Cannot start automatic task %s: %s", name, error)
