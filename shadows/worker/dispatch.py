"""The step between the reader and the runner: the entries a read returned become
messages (stand-ins for malformed ones, poison marked), their delivery is counted by
START before they run (for held ones, their claim is confirmed first), and each one
runs as its own asyncio task, tracked (its lease renewed by :class:`Leases`) until it
ends. See :mod:`reader` for the origins."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from shadows.core.deliveries import suspect_after
from shadows.core.execution import MALFORMED, POISON, Message, MessageError, now_ms, preview
from shadows.core.keys import WORKER_GROUP
from shadows.core.message import ref_of
from shadows.worker.leases import Leases
from shadows.worker.outcome import Verdict
from shadows.worker.reader import HELD, Entry, StreamReader, entry_id
from shadows.worker.release import acknowledge, release

if TYPE_CHECKING:
    from shadows.core.backend import Backend
    from shadows.worker.revocations import Revocations
    from shadows.worker.runner import Runner

logger = logging.getLogger("shadows.worker")


class Dispatcher:
    """Starts the messages of one worker and keeps them until they end."""

    def __init__(
        self,
        shadow: Backend,
        name: str,
        reader: StreamReader,
        runner: Runner,
        *,
        max_deliveries: int,
        redelivery: float,
        stopping: asyncio.Event,
        slot_freed: asyncio.Event,
        idle: asyncio.Event,
        settling: set[str],
    ) -> None:
        self.shadow = shadow
        self.name = name
        self.reader = reader
        self.runner = runner
        self.max_deliveries = max_deliveries
        self.redelivery = redelivery
        self.stopping = stopping
        #: Set when a task ends (a slot freed), and when none runs any more.
        self.slot_freed = slot_freed
        self.idle = idle
        #: Messages whose run is over and whose outcome is being settled: not fenced.
        self.settling = settling
        # by Message.ref (the message id, suffixed with its shard beyond shard 0)
        self.active: dict[str, asyncio.Task[None]] = {}
        self.messages: dict[str, Message] = {}
        #: Calls sent in the background (the loop holds tasks only weakly: an
        #: unreferenced one could vanish mid-call).
        self._in_background: set[asyncio.Future[Any]] = set()
        #: A suspect message running alone (see shadows.core.deliveries): the worker
        #: reads nothing else meanwhile. ``deferred``: START left messages in the pending
        #: list, to be taken back once nothing runs.
        self.isolated: str | None = None
        self.deferred = False
        #: Messages whose task this worker cancelled by fencing: handed back (RELEASE,
        #: which takes their delivery off) when they come back from the pending list, so
        #: that a stall followed by a death does not count as a death running them.
        self.fenced: dict[str, None] = {}
        self.leases = Leases(reader.shards.view, name, redelivery, self.messages.get, self.lose)
        #: The cancellations of running work this worker acts on (set by the worker).
        self.revocations: Revocations | None = None

    def cancel_all(self) -> None:
        """Cancel every running task (a forced stop)."""
        for task in list(self.active.values()):
            task.cancel()

    async def start(self, entries: list[Entry], origin: str = HELD, shard: int = 0) -> None:
        """Run ``entries`` of ``shard`` once START, which counts their delivery, is on
        its way (for messages held for a while, once it has confirmed their claim); see
        :mod:`reader` for the origins."""
        view = self.reader.shards.view(shard)
        messages: list[Message] = []
        broken: list[str] = []
        for raw_id, fields in entries:
            message_id = entry_id(raw_id)
            if not fields:
                broken.append(message_id)  # deleted while pending
                continue
            try:
                messages.append(Message.parse(fields, message_id))
            except MessageError as error:
                logger.error(
                    "Dead-lettering malformed message %s: %s (fields: %r)",
                    message_id,
                    error,
                    preview(fields),
                )
                messages.append(Message.malformed(message_id, fields, error))
        for message in messages:
            message.shard = shard
        instance = self.reader.instance
        again = [m.message_id for m in messages if self.fenced.pop(m.ref, 0) is None]
        if again:
            await release(view, self.name, again, instance)
            logger.info("Handed back %d message(s) given up by fencing", len(again))
            messages = [m for m in messages if m.message_id not in again]
        if self.stopping.is_set():
            await release(view, self.name, [m.message_id for m in messages], instance)
            messages = []
        if broken:
            await acknowledge(view, broken)
        if not messages:
            return
        keys = view.keys
        sent = self.reader.sent_at
        if origin != HELD and time.monotonic() - sent > self.redelivery / 4:
            origin = HELD  # the reply came late: another worker may have claimed them
        start_keys = [keys.stream, *(keys.run(m.key) for m in messages)]
        alone = 0 if self.active else 1
        start_args: list[str | int] = [WORKER_GROUP, self.name, now_ms(), instance, alone]
        start_args += [suspect_after(self.max_deliveries), 1 if origin == HELD else 0]
        start_args += [m.message_id for m in messages]
        reader = self.reader.reader(shard)
        if origin != HELD:
            # First deliveries, read in time: nobody else can hold them, nor are they
            # poison or suspects. START is sent first, so a task that takes its worker
            # down at once has had its delivery counted; the tasks start while its reply
            # comes back (a task that finished first is no longer pending, and START
            # leaves its record alone), and the ones it found revoked are cancelled.
            reply = await reader.send_start(start_keys, start_args)
            self._launch(messages, sent)
            revoked = (await reply)[4]
            if revoked and self.revocations is not None:
                self.revocations.cancel_all(ref_of(shard, entry_id(m)) for m in revoked)
        else:
            # START counts each delivery in Redis (see shadows.core.deliveries), confirms
            # the claim and restarts its clock: one delivered too often is dead-lettered
            # as poison, a suspect runs alone.
            sent = time.monotonic()
            lost, counts, deferred, suspect, revoked = await reader.start(start_keys, start_args)
            for message, count in zip(messages, counts, strict=True):
                if int(count) > self.max_deliveries and MALFORMED not in message.extra:
                    message.extra[POISON] = str(int(count))
            messages = self._unrevoked(messages, revoked)
            messages = self._isolate(messages, deferred, suspect, shard)
            self._launch(self._unlost(messages, lost), sent)
        if self.revocations is not None and self.revocations.heard_any(messages):
            self._background(self.revocations.check())

    def _launch(self, messages: list[Message], sent: float) -> None:
        """Run each message as its own task (its claim clock started at ``sent``)."""
        for message in messages:
            ref = message.ref
            self.leases.track(ref, sent)
            task = asyncio.create_task(
                self.runner.run(message), name=f"{message.function}:{message.key}"
            )
            self.active[ref] = task
            self.messages[ref] = message
            task.add_done_callback(functools.partial(self._done, ref))

    def _unlost(self, messages: list[Message], lost: list[Any]) -> list[Message]:
        """``messages`` but those START found held by another worker."""
        if not lost:
            return messages
        gone = {entry_id(message_id) for message_id in lost}
        for message in messages:
            if message.message_id in gone:
                logger.warning(
                    "Not starting %s [key=%s]: another worker claimed its message "
                    "before this one heard of it",
                    message.function,
                    message.key,
                )
        return [m for m in messages if m.message_id not in gone]

    def _unrevoked(self, messages: list[Message], revoked: list[Any]) -> list[Message]:
        """``messages`` but those START found revoked: settled as cancelled, not run."""
        if not revoked or self.revocations is None:
            return messages
        keep, stopped = self.revocations.unstarted(messages, revoked)
        for message in stopped:
            self._background(self.runner.outcomes.settle(message, Verdict("cancelled")))
        return keep

    def _background(self, call: Awaitable[Any]) -> None:
        future = asyncio.ensure_future(call)
        self._in_background.add(future)
        future.add_done_callback(self._background_ended)

    def paused(self) -> bool:
        """Whether the read loop must wait: a suspect runs alone. Once nothing runs, the
        deferred messages are taken back (the reader looks at its pending list)."""
        if self.deferred and not self.active:
            self.deferred, self.reader.recover = False, True
        return self.isolated is not None

    def _isolate(
        self, messages: list[Message], deferred: list[Any], suspect: Any, shard: int
    ) -> list[Any]:
        """The messages START took (on ``shard``): without the ones it deferred, noting
        the suspect that runs alone."""
        if deferred:
            waiting = {entry_id(message_id) for message_id in deferred}
            messages = [m for m in messages if m.message_id not in waiting]
            self.deferred = True
        if suspect:
            self.isolated = ref_of(shard, entry_id(suspect))
            logger.warning(
                "Running %s alone: its workers died running it before (%d message(s) "
                "wait until it ends)",
                self.isolated,
                len(deferred),
            )
        return messages

    def _background_ended(self, call: asyncio.Future[Any]) -> None:
        """A background call ended (its failure is logged: the call retries nothing)."""
        self._in_background.discard(call)
        if not call.cancelled() and call.exception() is not None:
            logger.debug("A background call failed: %s", call.exception())

    def _done(self, message_id: str, task: asyncio.Task[None] | None = None) -> None:
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.error("Internal: running %s raised", task.get_name(), exc_info=task.exception())
        self.active.pop(message_id, None)
        self.messages.pop(message_id, None)
        if self.isolated == message_id:
            self.isolated = None
        self.leases.forget(message_id)
        self.slot_freed.set()
        if not self.active:
            self.idle.set()

    async def drain(self) -> None:
        """Wait for the running tasks (they acknowledge their own messages)."""
        while self.active:
            tasks = list(self.active.values())
            await asyncio.wait(tasks)
            await asyncio.sleep(0)  # let the tasks' done callbacks run
            for message_id, task in list(self.active.items()):
                if task.done():
                    logger.error("Internal: finished task %s was still listed", task.get_name())
                    self._done(message_id)

    def lose(self, message_id: str, reason: str) -> None:
        """Stop a task whose claim is gone (fencing).

        If the message is still this consumer's once Redis answers again (a stall, not
        another worker's claim), the next read takes it back through START, which does
        not count a delivery: stalls alone never make a task look like poison.
        """
        task = self.active.get(message_id)
        self.leases.forget(message_id)
        self.reader.recover = True
        if message_id in self.settling:
            # Its run is over: nothing can overlap it any more, and its outcome settles
            # once Redis answers (or is refused, should another worker own it by then).
            # Cancelling would drop the outcome and run it again.
            logger.warning("Claim of %s unconfirmed (%s); its outcome waits", message_id, reason)
            return
        if task is not None and not task.done():
            logger.error("Cancelling task %s: %s", task.get_name(), reason)
            task.cancel()
            self.fenced[message_id] = None
            if len(self.fenced) > 10_000:  # ones another worker took never come back
                self.fenced.pop(next(iter(self.fenced)))
