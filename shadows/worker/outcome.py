"""The outcome of one message, the step after the runner: counted, then handed to the
completions, which acknowledge it and place what follows (a retry, the next perpetual
run) or keep it as a dead letter, in one COMPLETE call.

A verdict Redis refuses (anything but an outage, which the completions ride out) is
dead-lettered as an internal failure instead, and as a last resort the message is
acknowledged with plain commands: a message is never left unsettled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shadows.core.execution import Message
from shadows.operations.dead_letters import Failure
from shadows.worker.release import abandon
from shadows.worker.shards import of_shard

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shadows.core.backend import Backend
    from shadows.operations.metrics import WorkerMetrics
    from shadows.worker.completions import Completions

logger = logging.getLogger("shadows.worker")


@dataclass(slots=True)
class Verdict:
    """How a message ends: the outcome to record, the message to place next (a retry or
    the next perpetual run) and the failure to keep as a dead letter."""

    outcome: str
    follow: Message | None = None
    failure: Failure | None = None
    #: Fields kept in the run record when it ends: the result, or the error.
    record: list[str | bytes] = field(default_factory=list)


class Outcomes:
    """Settles the verdicts of one worker's messages (made by the worker, used by its
    runner)."""

    def __init__(
        self,
        shadow: Backend,
        metrics: WorkerMetrics,
        completions: Completions,
        scheduler_wake: asyncio.Event,
        settling: set[str],
    ) -> None:
        self.shadow = shadow
        self.metrics = metrics
        self.completions = completions
        self.scheduler_wake = scheduler_wake
        #: The messages being settled now (shared with the dispatcher: their run is over,
        #: so a lapsed claim does not cancel them).
        self.settling = settling
        #: Places a follow-up whose key belongs in another shard now (see
        #: :meth:`Homing.relocate`); ``None`` when it placed it, else the follow-up.
        self.relocate: Callable[[Message, Message], Awaitable[Message | None]] | None = None

    async def settle(self, message: Message, verdict: Verdict) -> None:
        """Report ``verdict`` to Redis, falling back as the module says."""
        try:
            await self.finish(
                message, verdict.outcome, verdict.follow, verdict.failure, verdict.record
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.error(
                "Cannot settle %s as %s: %s: %s",
                _describe(message),
                verdict.outcome,
                type(error).__name__,
                error,
                exc_info=error,
            )
            failure = Failure.from_exception("internal", error)
        try:
            await self.finish(message, "failed", None, failure)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.error(
                "Cannot dead-letter %s either (%s: %s); acknowledging it as failed",
                _describe(message),
                type(error).__name__,
                error,
            )
        await self.abandon(message, "failed")

    async def finish(
        self,
        message: Message,
        outcome: str,
        next_message: Message | None = None,
        failure: Failure | None = None,
        record: list[str | bytes] | None = None,
    ) -> bool:
        """Acknowledge ``message`` and record its outcome, or place ``next_message``;
        with ``failure``, keep it as a dead letter too; ``record`` (the result or the
        error) is kept in the run record of a final outcome.

        Retries through Redis outages for as long as the task waits; returns ``False``
        when the claim turned out to be someone else's. Every outcome is counted here:
        ``completed``, ``failed`` (a retry when ``next_message`` is a later attempt),
        ``drop`` (a malformed message, counted as failed) and ``stricken``.
        """
        try:
            self.metrics.finished(message, outcome, next_message, failure)
        except Exception:
            # Counting must never keep a message from being settled.
            logger.exception(
                "Cannot count the outcome of %s [key=%s]", message.function, message.key
            )
        self.settling.add(message.ref)
        try:
            follow = next_message
            if follow is not None and self.relocate is not None:
                follow = await self.relocate(message, follow)  # None: placed in its shard
            done = await self.completions.submit(message, outcome, follow, failure, record)
        finally:
            self.settling.discard(message.ref)
        if next_message is not None:
            self.scheduler_wake.set()  # it may be due before the scheduler's next look
        return done

    async def abandon(self, message: Message, outcome: str) -> None:
        """The last resort for a message that the COMPLETE script refuses to settle:
        acknowledge it and record ``outcome`` with plain commands, so that it neither
        blocks the queue nor keeps its key taken (see :func:`release.abandon`)."""
        try:
            await abandon(of_shard(self.shadow, message.shard), message, outcome)
        except Exception:
            logger.exception(
                "Cannot acknowledge %s [key=%s]; it is redelivered after the redelivery timeout",
                message.function,
                message.key,
            )


def _describe(message: Message) -> str:
    return f"{message.function} [key={message.key} attempt={message.attempt}]"
