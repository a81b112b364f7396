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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shadows.behaviours.base import plan_for
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.core.routing import needs_home as routed_home
from shadows.core.scripts import _PRELUDE, _SCHEDULE_ONE

if TYPE_CHECKING:
    from shadows.core.backend import Backend

logger = logging.getLogger("shadows.worker")

# KEYS: stream, queue, run, parked, successor (of the home shard)
# ARGV: group, key, when_ms, now_ms, mark (shard:message id), then the message's fields
# Adds the message to the home shard unless this very message was moved already.
# Returns the add's state ('moved' when it was moved before).
MOVE_HOME = (
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
LEAVE = (
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
    """Moves one worker's misplaced home-shard messages home (logged once per task)."""

    def __init__(self, shadow: Backend, consumer: str) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self._logged: set[str] = set()

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
