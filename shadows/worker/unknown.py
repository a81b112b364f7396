"""Messages for tasks a worker does not know: handed back for the workers that do.

During a rolling deploy, workers of the old release read messages of task types that only
the new release registers. Dead-lettering them on first delivery would fail the new work
for good; instead a worker that does not know a task parks its message again for a short
while (in the queue, where the scheduler moves it back to the stream for any worker) and
dead-letters it only once ``unknown_task_grace`` has passed since its first refusal while
no live worker registers that task (the registry lists each worker's tasks).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.scripts import _PRELUDE, linked
from shadows.operations.registry import list_workers

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from shadows.core.backend import Backend

logger = logging.getLogger("shadows.worker")

#: How long a handed-back message waits before it is ready again, when a live worker
#: knows its task (short: that worker should get it soon) ...
SOON = 0.5
#: ... and at most when none does (waiting for the new release to start).
LATER = 5.0

# KEYS: stream, queue, run, parked
# ARGV: group, consumer, message id, key, now_ms, delay_ms, grace_ms, known (1 or 0),
#       fields of the message...
# Returns {'lost', 0} when the message is no longer this consumer's; {'dead', since} when
# the grace period since its first refusal is over and no live worker knows its task;
# else {'back', since}: acknowledged and parked again until now + delay. The first
# refusal is kept in the run record ('unknown-since'; any new placement clears it).
HAND_BACK = linked(
    _PRELUDE
    + r"""
local stream, queue, run, parked = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, id, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, delay, grace = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if pending_owner(stream, group, id) ~= consumer then return {'lost', 0} end
local since = tonumber(redis.call('HGET', run, 'unknown-since') or '') or now
if ARGV[8] == '0' and now - since >= grace then return {'dead', since} end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
place(stream, queue, run, parked, key, now + delay, now, fields, false)
redis.call('HSET', run, 'unknown-since', since)
return {'back', since}
"""
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What became of a message for an unknown task."""

    #: ``back`` (handed back), ``dead`` (dead-letter it) or ``lost`` (not ours any more).
    verdict: str
    #: The live workers that register the task.
    knowing: tuple[str, ...]
    #: Seconds since the first refusal of this message.
    waited: float


class UnknownTasks:
    """One worker's handling of messages for tasks it does not register."""

    def __init__(self, shadow: Backend, consumer: str, grace: float, refresh: float) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self.grace = grace
        #: How long a look at the registry is reused (a heartbeat interval).
        self.refresh = refresh
        self._known: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._logged: set[str] = set()
        self._script: AsyncScript | None = None

    async def knowing(self, task: str) -> tuple[str, ...]:
        """The live workers that register ``task`` (from a recent look at the registry)."""
        seen = self._known.get(task)
        now = time.monotonic()
        if seen is not None and now - seen[0] < self.refresh:
            return seen[1]
        workers = tuple(info.name for info in await list_workers(self.shadow, task))
        self._known[task] = (now, workers)
        return workers

    async def refuse(self, message: Message) -> Refusal:
        """Hand ``message`` back, or say it is to be dead-lettered."""
        knowing = await self.knowing(message.function)
        delay = SOON if knowing else max(SOON, min(LATER, self.grace / 10))
        if self._script is None:
            self._script = self.shadow.client.register_script(HAND_BACK)
        keys = self.shadow.keys.of_shard(message.shard)  # handed back into its own shard
        now = now_ms()
        verdict, since = await self._script(
            keys=[keys.stream, keys.queue, keys.run(message.key), keys.parked(message.key)],
            args=[
                WORKER_GROUP,
                self.consumer,
                message.message_id,
                message.key,
                now,
                int(delay * 1000),
                int(self.grace * 1000),
                1 if knowing else 0,
                *message.fields(),
            ],
        )
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        refusal = Refusal(verdict, knowing, max(0.0, (now - int(since)) / 1000))
        if verdict == "back" and message.function not in self._logged:
            self._logged.add(message.function)
            logger.warning(
                "Task %s is not registered on worker %s: handing its messages back for %s "
                "(dead-lettered once %.0f s pass with no live worker registering it)",
                message.function,
                self.consumer,
                ", ".join(knowing) if knowing else "workers that register it",
                self.grace,
            )
        return refusal
