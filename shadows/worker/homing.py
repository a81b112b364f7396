"""Moving a message that belongs in the home shard there (issue 14, the home-shard rule).

A task whose behaviours join global keys (concurrency pools, cooldowns, rate limits,
debounce buckets: all in the home shard) with its message's stream and run record runs
only from shard 0, so that each of those scripts stays inside one slot. A producer of an
older version, or a task whose declaration changed since it was added, can still leave
such a message on a shard ``i > 0``; the worker then moves it home instead of running it
with a cross-slot script:

1. MOVE_HOME adds it to shard 0 under its key (an add: if the key already lives there,
   that copy wins), and marks the home run record with where it came from;
2. the message is then acknowledged on shard ``i`` and its run record there dropped.

In that order, a crash in between leaves the message on shard ``i`` to be moved again:
the mark makes the second move a no-op, so the task runs once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from shadows.behaviours.base import plan_for
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.core.routing import needs_home as routed_home
from shadows.core.routing import shard_for
from shadows.core.scripts import _PRELUDE, _SCHEDULE_ONE, linked

if TYPE_CHECKING:
    from shadows.core.backend import Backend

logger = logging.getLogger("shadows.worker")

# KEYS: stream, queue, run, parked, successor (of the home shard)
# ARGV: group, key, when_ms, now_ms, mark (shard:message id), then the message's fields
# Adds the message to the home shard unless this very message was moved already.
# Returns the add's state ('moved' when it was moved before).
MOVE_HOME = linked(
    _PRELUDE
    + _SCHEDULE_ONE
    + r"""
local run, mark = KEYS[3], ARGV[5]
if redis.call('HGET', run, 'moved-from') == mark then return 'moved' end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local state = schedule_one(KEYS[1], KEYS[2], run, KEYS[4], KEYS[5], ARGV[2], ARGV[3],
                           ARGV[4], 'add', ARGV[1], '', fields)
redis.call('HSET', run, 'moved-from', mark)
return state
"""
)

# KEYS: stream, run (of the shard the message was on)
# ARGV: group, consumer, message id
# Acknowledges and deletes the moved message and drops its run record there (if the
# record is still this message's). Returns 0 when the message is no longer this
# consumer's.
LEAVE = linked(
    _PRELUDE
    + r"""
local stream, run, group, consumer, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
if pending_owner(stream, group, id) ~= consumer then return 0 end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
if redis.call('HGET', run, 'message') == id then redis.call('DEL', run) end
return 1
"""
)


def needs_home(function: Callable[..., Any]) -> bool:
    """Whether ``function``'s messages must run from the home shard (the routing rule
    producers follow too: :func:`shadows.core.routing.shard_for`)."""
    return routed_home(plan_for(function))


class Homing:
    """Moves one worker's misplaced home-shard messages home (logged once per task), and
    places follow-ups in their key's shard under the worker's own count."""

    def __init__(
        self,
        shadow: Backend,
        consumer: str,
        shards: int = 1,
        tasks: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.shadow = shadow
        self.consumer = consumer
        #: The worker's own shard count: where its producers put a key now.
        self.shards = shards
        self.tasks = tasks if tasks is not None else {}
        self._logged: set[str] = set()
        self._relocated: set[str] = set()

    def shard_of(self, message: Message) -> int:
        """The shard ``message``'s key belongs in under this worker's count."""
        if self.shards <= 1 and not message.shard:
            return 0
        function = self.tasks.get(message.function)
        return shard_for(self.shards, message.key, function is not None and needs_home(function))

    async def relocate(self, message: Message, follow: Message) -> Message | None:
        """Place ``follow`` (the retry or next run of ``message``) in its key's shard when
        that is not ``message``'s (the shard count changed since the key was placed):
        otherwise a perpetual chain would keep an old count's shard busy for ever. An add
        there (a live copy of the key wins), before COMPLETE acknowledges ``message``
        without a follow-up: a crash in between runs ``message`` again, whose follow-up
        then finds the key taken. ``follow`` back when it stays (same shard, the run was
        revoked, or Redis is unreachable: then it stays in ``message``'s shard)."""
        target = self.shard_of(message)
        if target == message.shard:
            return follow
        keys = self.shadow.keys.of_shard(target)
        key = message.key
        try:
            there = self.shadow.keys.of_shard(message.shard).run(key)
            if await self.shadow.client.hexists(there, "revoked"):
                return follow  # COMPLETE places nothing after a revoked run
            await self.shadow.scripts.schedule(
                keys=[
                    keys.stream,
                    keys.queue,
                    keys.run(key),
                    keys.parked(key),
                    keys.successor(key),
                ],
                args=[key, follow.when_ms, now_ms(), "add", WORKER_GROUP, "", *follow.fields()],
            )
        except CONNECTION_ERRORS as error:
            logger.info("Follow-up of %s stays in shard %d: %s", key, message.shard, error)
            return follow
        if message.function not in self._relocated:
            self._relocated.add(message.function)
            logger.info(
                "Placed the next run of %s [key=%s] in shard %d (its shard with %d shards), "
                "leaving shard %d; later ones are moved without this message",
                message.function,
                key,
                target,
                self.shards,
                message.shard,
            )
        return None

    async def move(self, message: Message) -> bool:
        """Move ``message`` (read on shard ``message.shard > 0``) to the home shard;
        ``False`` when it was no longer this worker's to move, or Redis could not be
        reached (it then stays in this consumer's pending list, taken back later)."""
        try:
            return await self._moved(message)
        except CONNECTION_ERRORS as error:
            logger.warning("Cannot move %s home yet: %s", message.key, error)
            return False

    async def _moved(self, message: Message) -> bool:
        home = self.shadow.keys.home
        key = message.key
        client = self.shadow.client  # of the running loop (scripts: EVALSHA)
        state = await client.register_script(MOVE_HOME)(
            keys=[home.stream, home.queue, home.run(key), home.parked(key), home.successor(key)],
            args=[
                WORKER_GROUP,
                key,
                message.when_ms,
                now_ms(),
                f"{message.shard}:{message.message_id}",
                *message.fields(),
            ],
        )
        there = home.of_shard(message.shard)
        left = await client.register_script(LEAVE)(
            keys=[there.stream, there.run(key)],
            args=[WORKER_GROUP, self.consumer, message.message_id],
        )
        if message.function not in self._logged:
            self._logged.add(message.function)
            logger.warning(
                "Moved %s [key=%s] from shard %d to the home shard (%s): its concurrency "
                "limit or flow control keeps it in shard 0 (a producer of an older version, "
                "or its declaration changed); later ones are moved without this message",
                message.function,
                key,
                message.shard,
                state.decode() if isinstance(state, bytes) else state,
            )
        return bool(int(left))
