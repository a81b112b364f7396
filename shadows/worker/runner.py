"""Running one message: decode it, take its concurrency slots, resolve its dependencies,
call it, and hand its verdict (done, retried, perpetuated, dead-lettered) to the next step,
:mod:`outcome`. Everything it needs comes in one :class:`Runner`, made by the worker: it
never calls back into the worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import Span

from shadows.behaviours.base import Context, plan_for, resolve_arguments, task_arguments
from shadows.behaviours.concurrency import ConcurrencyLimit
from shadows.behaviours.flow import Cooldown, RateLimit
from shadows.behaviours.perpetual import Perpetual
from shadows.behaviours.retry import Retry
from shadows.behaviours.timeout import Timeout
from shadows.core.execution import (
    MALFORMED,
    POISON,
    Execution,
    Holder,
    Message,
    current_holder,
    now_ms,
)
from shadows.core.serialization import PayloadError
from shadows.core.state import error_fields
from shadows.operations import instrumentation
from shadows.operations.dead_letters import Failure
from shadows.operations.strikes import Strike, flatten_arguments
from shadows.worker import throttle
from shadows.worker.follow import declared_retry, next_run, retried
from shadows.worker.homing import Homing, needs_home
from shadows.worker.outcome import Outcomes, Verdict
from shadows.worker.results import result_record
from shadows.worker.slots import Revoked
from shadows.worker.slots import acquire as acquire_slots

if TYPE_CHECKING:
    from collections import Counter

    from shadows.behaviours.base import Named
    from shadows.operations.metrics import WorkerMetrics
    from shadows.operations.strikes import StrikeList
    from shadows.producer.shadow import Shadow
    from shadows.worker.caps import RunCaps
    from shadows.worker.revocations import Revocations
    from shadows.worker.unknown import UnknownTasks

logger = logging.getLogger("shadows.worker")

T = TypeVar("T")


def _find(kind: type[T], context: Context) -> T | None:
    """The resolved behaviour of ``kind``: declared outside the signature, or a parameter."""
    for value in (*context.behaviours, *context.arguments.values()):
        if isinstance(value, kind):
            return value
    return None


def _describe(message: Message) -> str:
    return f"{message.function} [key={message.key} attempt={message.attempt}]"


class Runner:
    """What running a worker's messages needs, handed over once by the worker."""

    def __init__(
        self,
        shadow: Shadow,
        worker: Named,
        *,
        strikes: StrikeList,
        stricken: Counter[str],
        dropped: Counter[str],
        caps: RunCaps,
        unknown: UnknownTasks,
        metrics: WorkerMetrics,
        outcomes: Outcomes,
        lease_ms: int,
        reconnect_cap: float,
        instance: Callable[[], str],
        revocations: Revocations | None = None,
    ) -> None:
        self.shadow = shadow
        #: The worker, for the ``CurrentWorker()`` dependency only.
        self.worker = worker
        self.name = worker.name
        self.strikes = strikes
        #: Calls acknowledged without running, and runs dropped by a flow gate, by task.
        self.stricken = stricken
        self.dropped = dropped
        self.caps = caps
        self.unknown = unknown
        self.metrics = metrics
        self.outcomes = outcomes
        self.lease_ms = lease_ms
        self.reconnect_cap = reconnect_cap
        #: The worker run's instance token (deliveries to one run count once).
        self.instance = instance
        #: Which cancellations of this worker's tasks come from ``shadow.cancel()``.
        self.revocations = revocations
        self.homing = Homing(shadow, self.name, shadow.shards, shadow.tasks)
        outcomes.relocate = self.homing.relocate  # follow-ups go to their key's shard

    async def run(self, message: Message) -> None:
        """Run ``message`` and settle it (see :func:`run_message`)."""
        await run_message(self, message)

    def allowed_to_run(self, message: Message) -> bool:
        """Count a run against ``run_at_most`` caps; ``False`` once a cap is spent."""
        return self.caps.allow(message)

    async def acquire(self, message: Message, slots: list[tuple[str, int]]) -> bool | None:
        """Take a slot in each concurrency pool for ``message`` (see :func:`slots.acquire`)."""
        return await acquire_slots(
            self.shadow,
            self.name,
            message,
            slots,
            self.lease_ms,
            self.reconnect_cap,
            self.instance(),
        )


async def run_message(runner: Runner, message: Message) -> None:
    """Run ``message`` on ``worker`` and settle it; never raises but on cancellation.

    Whatever fails in the worker's own handling of the message (a bug, a task object it
    cannot inspect, a broken metrics exporter) ends the message as a failed run, retried
    or dead-lettered by the task's policy: a message is never left unsettled.
    """
    try:
        verdict = await _decide(runner, message)
    except asyncio.CancelledError:
        revocations = runner.revocations
        if revocations is None or not revocations.taken(message.ref):
            raise
        # cancelled by shadow.cancel(): settled as such (COMPLETE places nothing after it)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        logger.warning("⊘ %s cancelled while running", _describe(message))
        verdict = Verdict("cancelled")
    except Revoked:
        logger.info("⊘ %s cancelled before it ran", _describe(message))
        verdict = Verdict("cancelled")
    except Exception as error:
        verdict = _internal_failure(runner, message, error)
    if verdict is not None:
        if verdict.failure is not None and not verdict.record:
            verdict.record = ["error", verdict.failure.error]
        await runner.outcomes.settle(message, verdict)


async def _decide(runner: Runner, message: Message) -> Verdict | None:
    """Run ``message`` if it may run; ``None`` when it is not this worker's to settle
    (parked for a concurrency slot, or claimed by another worker)."""
    shadow = runner.shadow
    if MALFORMED in message.extra:
        return Verdict(
            "drop", None, Failure("malformed", message.extra[MALFORMED], raw=message.raw)
        )
    if POISON in message.extra:
        deliveries = message.extra.pop(POISON)
        error = (
            f"delivered {deliveries} times without being acknowledged: every worker that "
            "ran it died or lost touch with Redis (out of memory? a crash?)"
        )
        logger.error("Dead-lettering poison message %s: %s", _describe(message), error)
        return Verdict("failed", None, Failure("poison", error))
    strikes = runner.strikes
    # A whole-task strike is honoured before decoding: a payload that crashes or hangs the
    # decoder is one reason to strike a task.
    whole = strikes.task_strike(message.function) if strikes else None
    if whole is not None:
        return _skip_stricken(runner, message, whole, message.function)
    function = shadow.tasks.get(message.function)
    if function is None:
        return await _unknown(runner, message)
    if message.shard and needs_home(function):
        await runner.homing.move(message)  # settled there: acknowledged on this shard
        return None
    try:
        execution = Execution.from_message(message, function, shadow.payloads)
    except PayloadError as error:
        logger.error("Refusing %s: %s", _describe(message), error)
        return Verdict("failed", None, Failure("rejected", str(error)))
    except Exception as error:
        logger.error(
            "Cannot decode the arguments of %s: %s: %s",
            _describe(message),
            type(error).__name__,
            error,
        )
        return Verdict("failed", None, Failure.from_exception("undecodable", error))
    plan = plan_for(function)
    try:
        arguments = task_arguments(execution)
    except TypeError as error:
        logger.error("Wrong arguments for %s: %s", _describe(message), error)
        return Verdict("failed", None, Failure("bad-arguments", str(error)))

    if strikes:
        strike = strikes.match(message.function, flatten_arguments(arguments, plan.signature))
        if strike is not None:
            return _skip_stricken(runner, message, strike, execution.call_repr())

    limits = plan.all(ConcurrencyLimit)
    if limits:
        try:
            slots = [
                (limit.slot(execution.function_name, arguments), limit.max_concurrent)
                for limit in limits
            ]
        except KeyError as error:
            logger.error("Cannot limit %s: %s", _describe(message), error.args[0])
            return Verdict("failed", None, Failure("failed", error.args[0]))
        taken = await runner.acquire(message, slots)
        if taken is None:
            if logger.isEnabledFor(logging.INFO):
                logger.info("⏸ %s waits for a free concurrency slot", _describe(message))
            return None
        if not taken:
            return None

    cooldown, rates = plan.find(Cooldown), plan.all(RateLimit)
    if cooldown is not None or rates:
        gated = await _gate(runner, message, execution, arguments, cooldown, rates)
        if gated is not _START:
            return gated

    if not runner.allowed_to_run(message):
        return Verdict("skipped")  # run_at_most: its cap is spent
    return await _run(runner, execution, message)


#: The verdict of a gate that lets the run start.
_START = Verdict("start")


async def _gate(
    runner: Runner,
    message: Message,
    execution: Execution,
    arguments: dict[str, Any],
    cooldown: Cooldown | None,
    rates: Sequence[RateLimit],
) -> Verdict | None:
    """Cooldown and rate limits (see :mod:`throttle`): ``_START`` when the run may start,
    else how it ends now (dropped, postponed, or ``None``: no longer this worker's)."""
    try:
        gate = await throttle.check(
            runner.shadow,
            runner.name,
            runner.reconnect_cap,
            message,
            execution.function_name,
            arguments,
            cooldown,
            rates,
        )
    except KeyError as error:
        logger.error("Cannot limit %s: %s", _describe(message), error.args[0])
        return Verdict("failed", None, Failure("failed", error.args[0]))
    if gate.decision == "start":
        return _START
    if gate.decision == "lost":
        return None
    details = {
        "task": message.function,
        "key": message.key,
        "attempt": message.attempt,
        "worker": runner.name,
        "outcome": "dropped" if gate.decision == "drop" else "postponed",
    }
    if gate.decision == "drop":
        runner.dropped[message.function] += 1
        logger.info("⊘ %s dropped by %s", _describe(message), gate.reason, extra=details)
        return Verdict("dropped")
    if logger.isEnabledFor(logging.INFO):
        delay = max(0, gate.when_ms - now_ms()) / 1000
        logger.info(
            "⏸ %s postponed %.3f s by %s", _describe(message), delay, gate.reason, extra=details
        )
    return Verdict("postponed", throttle.postponed(runner.shadow, message, gate.when_ms))


async def _unknown(runner: Runner, message: Message) -> Verdict | None:
    """Hand a message for a task this worker does not register back for the workers
    that do; dead-letter it once the grace period is over and none is alive."""
    refusal = await runner.unknown.refuse(message)
    if refusal.verdict == "back":
        runner.metrics.handed_back(message)
        return None
    if refusal.verdict != "dead":
        return None  # another worker claimed it meanwhile
    error = (
        f"no function {message.function!r} is registered on worker {runner.name} "
        f"(registered: {', '.join(sorted(runner.shadow.tasks))}), and no live worker "
        f"registered it within {refusal.waited:.0f} s (unknown_task_grace)"
    )
    logger.error("Unknown task %s: %s", _describe(message), error)
    return Verdict("failed", None, Failure("unknown-task", error))


def _skip_stricken(runner: Runner, message: Message, strike: Strike, call: str) -> Verdict:
    """Acknowledge a stricken call without running it: no retry, no next perpetual run."""
    runner.stricken[message.function] += 1
    logger.warning(
        "⊘ %s [key=%s attempt=%d] stricken by %s, not run",
        call,
        message.key,
        message.attempt,
        strike,
        extra={
            "task": message.function,
            "key": message.key,
            "attempt": message.attempt,
            "worker": runner.name,
            "outcome": "stricken",
            "strike": str(strike),
        },
    )
    return Verdict("stricken")


def _internal_failure(runner: Runner, message: Message, error: Exception) -> Verdict:
    """The verdict on a message whose handling failed inside the worker: a failed run,
    retried when the task's declared ``Retry`` allows, else dead-lettered."""
    logger.error(
        "✘ Internal error while handling %s: %s: %s",
        _describe(message),
        type(error).__name__,
        error,
        exc_info=error,
        extra={
            "task": message.function,
            "key": message.key,
            "attempt": message.attempt,
            "worker": runner.name,
            "outcome": "failed",
        },
    )
    try:
        follow = declared_retry(runner.shadow.tasks, runner.shadow.payloads, message)
    except Exception:
        logger.exception("Cannot retry %s after an internal error", _describe(message))
        follow = None
    if follow is not None:
        return Verdict("failed", follow)
    return Verdict("failed", None, Failure.from_exception("internal", error))


async def _run(runner: Runner, execution: Execution, message: Message) -> Verdict:
    with instrumentation.running(runner.shadow.name, runner.name, execution, message) as span:
        verdict = await _attempt(runner, execution, message, span)
        if verdict.follow is not None and instrumentation.carry(span, verdict.follow):
            runner.shadow.payloads.seal(verdict.follow)  # the context is signed too
    return verdict


async def _attempt(
    runner: Runner, execution: Execution, message: Message, span: Span | None
) -> Verdict:
    """Call the task once; returns the outcome to report, the message to place next and
    the failure to keep."""
    function = execution.function
    plan = plan_for(function)
    verbose = logger.isEnabledFor(logging.INFO)
    call = execution.call_repr() if verbose else ""
    details: dict[str, Any] = {
        "task": execution.function_name,
        "key": execution.key,
        "attempt": execution.attempt,
        "worker": runner.name,
    }
    if verbose:
        logger.info(
            "▶ %s [key=%s attempt=%d]", call, execution.key, execution.attempt, extra=details
        )

    stack = AsyncExitStack()
    context = Context(runner.shadow, runner.worker, execution, stack)
    series = runner.metrics.run_started(message)
    started = time.perf_counter()
    error: Exception | None = None
    record: list[str | bytes] = []
    # Inside the run (its dependencies included), the task may schedule its own key's
    # successor.
    holder = Holder(runner.shadow.name, execution.key, message.message_id, message.shard)
    holding = current_holder.set(holder)
    try:
        async with stack:
            arguments = await resolve_arguments(plan, context)
            keywords = {**execution.kwargs, **arguments}
            timeout = _find(Timeout, context)
            scope = timeout.start() if timeout else contextlib.nullcontext()
            async with scope:
                if plan.is_async:
                    result = await function(*execution.args, **keywords)
                else:
                    result = await asyncio.to_thread(function, *execution.args, **keywords)
                    if inspect.isawaitable(result):  # a sync wrapper around a coroutine
                        result = await result
            if result is not None:
                record = result_record(runner.shadow, execution, result)
    except TimeoutError as raised:
        timeout = _find(Timeout, context)
        error = raised
        if timeout is not None and timeout.expired():
            error = TimeoutError(
                f"{execution.function_name} exceeded its Timeout of {timeout.base}"
            )
            error.__cause__ = raised
    except Exception as raised:
        error = raised
    except asyncio.CancelledError:
        instrumentation.cancelled(span)
        raise
    finally:
        current_holder.reset(holding)
        elapsed = time.perf_counter() - started
        runner.metrics.run_ended(series, elapsed)
    details["duration"] = round(elapsed, 6)

    perpetual = _find(Perpetual, context)
    follow = next_run(runner.shadow.payloads, execution, message, perpetual)

    if error is None:
        details["outcome"] = "completed"
        instrumentation.succeeded(span)
        if verbose:
            logger.info(
                "✔ %s [key=%s attempt=%d] completed in %s",
                call,
                execution.key,
                execution.attempt,
                _duration(elapsed),
                extra=details,
            )
        return Verdict("completed", follow, record=record)

    retry = _find(Retry, context)
    delay = retry.next_delay() if retry else None
    instrumentation.failed(span, error, retrying=delay is not None)
    if delay is not None:
        details["outcome"] = "retrying"
        logger.warning(
            "↻ %s [key=%s attempt=%d] failed in %s, retrying in %s: %s: %s",
            call or execution.function_name,
            execution.key,
            execution.attempt,
            _duration(elapsed),
            _duration(delay.total_seconds()),
            type(error).__name__,
            error,
            # the traceback of a retried attempt only at DEBUG; the final failure has its own
            exc_info=error if logger.isEnabledFor(logging.DEBUG) else None,
            extra=details,
        )
        return Verdict("failed", retried(runner.shadow.payloads, message, delay))

    details["outcome"] = "failed"
    logger.error(
        "✘ %s [key=%s attempt=%d] failed in %s: %s: %s",
        call or execution.function_name,
        execution.key,
        execution.attempt,
        _duration(elapsed),
        type(error).__name__,
        error,
        exc_info=error,
        extra=details,
    )
    failure = Failure.from_exception("failed", error)
    return Verdict("failed", follow, failure, record=error_fields(error))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"
