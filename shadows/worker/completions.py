"""Acknowledging finished work in batches.

Every finished message needs one atomic step in Redis (acknowledge, delete, record the
outcome or place the retry). Instead of one round trip per task, finished messages queue
here and one script call settles everything that finished while the previous call was in
flight: no added delay when idle, few round trips when busy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shadows.core.cancellation import CancelGuard
from shadows.core.execution import Message, now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff
from shadows.operations.dead_letters import Failure
from shadows.worker.shards import of_shard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shadows.core.backend import Backend

logger = logging.getLogger("shadows.worker")

#: Messages settled by one script call at most.
BATCH = 200


@dataclass
class _Completion:
    message: Message
    outcome: str
    follow: Message | None
    failure: Failure | None
    record: list[str | bytes]
    future: asyncio.Future[bool] = field(repr=False)
    #: Settled once more after a look at whether Redis lost its data (see ``recheck``).
    rechecked: bool = False


class Completions:
    """The queue of finished messages of one worker, flushed by a background task."""

    def __init__(
        self,
        shadow: Backend,
        consumer: str,
        reconnect_cap: float,
        woke: asyncio.Event | None = None,
        recheck: Callable[[], Awaitable[object]] | None = None,
        outage: Callable[[], None] | None = None,
    ) -> None:
        self.shadow = shadow
        self.consumer = consumer
        self.reconnect_cap = reconnect_cap
        #: Set when a freed concurrency slot made a waiting task due (the scheduler's
        #: wake-up: it moves the task to the stream).
        self.woke = woke
        #: Called when messages turn out to be no longer pending, before settling them
        #: once more: Redis may have lost them (restarted empty), and the worker then
        #: restores their run records so that their follow-ups are placed after all.
        self.recheck = recheck
        #: Called when settling meets an outage: an acknowledgement written just before
        #: it may be lost (a failover), and the worker then looks at its pending list.
        self.outage = outage
        #: Messages whose acknowledgement settled (pruned by ``continuity``): a run record
        #: restored for one after that is stale (it settled before Redis lost its data).
        self.settled: set[str] = set()
        self._queue: list[_Completion] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.consumer}:completions")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        while self._queue and not task.done():
            pending = [c.future for c in self._queue]
            await asyncio.wait(pending)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def submit(
        self,
        message: Message,
        outcome: str,
        follow: Message | None = None,
        failure: Failure | None = None,
        record: list[str | bytes] | None = None,
    ) -> bool:
        """Settle ``message``; ``False`` when another worker has claimed it meanwhile.

        With ``failure``, the message is also kept as a dead letter; ``record`` fields
        (result, error) are kept in its run record.
        """
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Completion(message, outcome, follow, failure, record or [], future))
        self._wakeup.set()
        done: bool = await future
        if not done and not future.cancelled():
            logger.warning(
                "Task %s (message %s) is no longer claimed by %s; another worker owns it",
                message.key,
                message.message_id,
                self.consumer,
            )
        return done

    async def _run(self) -> None:
        backoff = Backoff(self.reconnect_cap)
        guard = CancelGuard()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            guard.check()
            while self._queue:
                # Waiters cancelled meanwhile (lost claims, forced stops) are dropped.
                self._queue = [c for c in self._queue if not c.future.done()]
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                if not batch:
                    break
                try:
                    results = await self._settle(batch)
                except CONNECTION_ERRORS as error:
                    self._queue[:0] = batch
                    if self.outage is not None:
                        self.outage()
                    delay = backoff.next()
                    logger.warning(
                        "Cannot acknowledge %d finished task(s) (%s); retrying in %.1f s",
                        len(batch),
                        error,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                except Exception as error:
                    # Not an outage: a bug or a server refusing the script. One message
                    # must not sink the others of its batch: settle them one by one, and
                    # hand the error to the ones that fail alone (the runner then
                    # dead-letters them or acknowledges them plainly).
                    if len(batch) > 1:
                        await self._settle_alone(batch)
                    else:
                        logger.error("Cannot acknowledge a finished task: %s", error)
                        batch[0].future.set_exception(error)
                    continue
                backoff.reset()
                vanished = []
                for completion, result in zip(batch, results, strict=True):
                    if int(result) == 2 and not completion.rechecked and self.recheck:
                        completion.rechecked = True
                        vanished.append(completion)
                    elif not completion.future.done():
                        self.settled.add(completion.message.ref)
                        completion.future.set_result(int(result) != 0)
                if vanished:
                    await self._recheck(vanished)

    async def _recheck(self, vanished: list[_Completion]) -> None:
        """Settle ``vanished`` once more after a look at whether Redis lost its data."""
        assert self.recheck is not None
        try:
            await self.recheck()
        except Exception as error:  # the second settlement says what became of them
            logger.debug("Cannot check whether Redis lost its data: %s", error)
        self._queue[:0] = vanished

    async def _settle_alone(self, batch: list[_Completion]) -> None:
        for completion in batch:
            try:
                results = await self._settle([completion])
            except CONNECTION_ERRORS:
                self._queue.append(completion)  # the outage path of the loop retries it
                self._wakeup.set()
                continue
            except Exception as error:
                logger.error("Cannot acknowledge task %s: %s", completion.message.key, error)
                if not completion.future.done():
                    completion.future.set_exception(error)
                continue
            if not completion.future.done():
                self.settled.add(completion.message.ref)
                completion.future.set_result(int(results[0]) != 0)

    async def _settle(self, batch: list[_Completion]) -> list[int]:
        """COMPLETE for ``batch``: one call per shard its messages came from."""
        shards = {completion.message.shard for completion in batch}
        if len(shards) == 1:
            return await self._settle_shard(of_shard(self.shadow, shards.pop()), batch)
        results: dict[int, int] = {}
        for shard in sorted(shards):
            some = [c for c in batch if c.message.shard == shard]
            try:
                settled = await self._settle_shard(of_shard(self.shadow, shard), some)
            except BaseException:
                # the shards settled already are done: only the others go round again
                for completion in batch:
                    done = results.get(id(completion))
                    if done is not None and not completion.future.done():
                        self.settled.add(completion.message.ref)
                        completion.future.set_result(done != 0)
                raise
            results.update(zip(map(id, some), settled, strict=True))
        return [results[id(completion)] for completion in batch]

    async def _settle_shard(self, shadow: Backend, batch: list[_Completion]) -> list[int]:
        keys = shadow.keys
        script_keys = [keys.stream, keys.queue, keys.failed]
        args: list[str | bytes | int] = [
            WORKER_GROUP,
            self.consumer,
            now_ms(),
            int(shadow.execution_ttl.total_seconds()),
            int(shadow.dead_letter_ttl.total_seconds() * 1000),
            shadow.dead_letter_limit,
        ]
        for completion in batch:
            message, follow = completion.message, completion.follow
            key = message.key
            script_keys += [keys.run(key), keys.parked(key), keys.successor(key), keys.dead(key)]
            for slot in message.holds:
                script_keys += [keys.concurrency(slot), keys.waiting(slot)]
            fields = follow.fields() if follow else []
            failure = completion.failure
            dead = failure.fields(self.consumer, message.fields()) if failure else []
            if follow is None:
                outcome = completion.outcome
            else:
                outcome = "retry" if follow.attempt > message.attempt else "reschedule"
            args += [
                message.message_id,
                outcome,
                message.key,
                follow.when_ms if follow else 0,
                len(fields),
                *fields,
                len(message.holds),
                len(dead),
                *dead,
                len(completion.record),
                *completion.record,
            ]
        results, trimmed = await shadow.scripts.complete(keys=script_keys, args=args)
        if trimmed:
            await drop_dead_letters(shadow, trimmed)
        if self.woke is not None and any(int(result) == 3 for result in results):
            self.woke.set()
        return [int(result) for result in results]


async def drop_dead_letters(shadow: Backend, trimmed: list[bytes | str]) -> None:
    """Delete the dead letters COMPLETE dropped from the index past the limit (in a call
    of their own: COMPLETE cannot declare keys it learns while it runs)."""
    keys = shadow.keys
    names = [key.decode() if isinstance(key, bytes) else key for key in trimmed]
    try:
        await shadow.scripts.drop_dead(
            keys=[keys.failed, *(keys.dead(name) for name in names)], args=names
        )
    except CONNECTION_ERRORS as error:  # they expire with their time to live anyway
        logger.debug("Could not delete %d trimmed dead letter(s): %s", len(names), error)
