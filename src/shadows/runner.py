"""Running one message: decode it, take its concurrency slots, resolve its dependencies,
call it, and settle the outcome (done, retried, perpetuated)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import Span

from . import instrumentation
from .dead_letters import Failure
from .dependencies import (
    ConcurrencyLimit,
    Context,
    Perpetual,
    Retry,
    Timeout,
    plan_for,
    resolve_arguments,
)
from .dependencies.base import task_arguments
from .execution import MALFORMED, POISON, Execution, Message, now_ms, to_ms
from .serialization import PayloadError
from .strikes import Strike, flatten_arguments

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("shadows.worker")

T = TypeVar("T")


def _find(kind: type[T], *sources: dict[str, Any]) -> T | None:
    for source in sources:
        for value in source.values():
            if isinstance(value, kind):
                return value
    return None


def _describe(message: Message) -> str:
    return f"{message.function} [key={message.key} attempt={message.attempt}]"


async def run_message(worker: Worker, message: Message) -> None:
    """Run ``message`` on ``worker`` and settle it; never raises but on cancellation."""
    shadow = worker.shadow
    if MALFORMED in message.extra:
        failure = Failure("malformed", message.extra[MALFORMED], raw=message.raw)
        await worker.finish(message, "drop", failure=failure)
        return
    if POISON in message.extra:
        deliveries = message.extra.pop(POISON)
        error = (
            f"delivered {deliveries} times without being acknowledged: every worker that "
            "ran it died or lost touch with Redis (out of memory? a crash?)"
        )
        logger.error("Dead-lettering poison message %s: %s", _describe(message), error)
        await worker.finish(message, "failed", failure=Failure("poison", error))
        return
    strikes = worker.strikes
    # A whole-task strike is honoured before decoding: a payload that crashes or hangs the
    # decoder is one reason to strike a task.
    whole = strikes.task_strike(message.function) if strikes else None
    if whole is not None:
        await _skip_stricken(worker, message, whole, message.function)
        return
    function = shadow.tasks.get(message.function)
    if function is None:
        error = (
            f"no function {message.function!r} is registered on worker {worker.name} "
            f"(registered: {', '.join(sorted(shadow.tasks))})"
        )
        logger.error("Unknown task %s: %s", _describe(message), error)
        await worker.finish(message, "failed", failure=Failure("unknown-task", error))
        return
    try:
        execution = Execution.from_message(message, function, shadow.payloads)
        plan = plan_for(function)
    except PayloadError as error:
        logger.error("Refusing %s: %s", _describe(message), error)
        await worker.finish(message, "failed", failure=Failure("rejected", str(error)))
        return
    except Exception as error:
        logger.error(
            "Cannot decode the arguments of %s: %s: %s",
            _describe(message),
            type(error).__name__,
            error,
        )
        failure = Failure.from_exception("undecodable", error)
        await worker.finish(message, "failed", failure=failure)
        return
    try:
        arguments = task_arguments(execution)
    except TypeError as error:
        logger.error("Wrong arguments for %s: %s", _describe(message), error)
        await worker.finish(message, "failed", failure=Failure("bad-arguments", str(error)))
        return

    if strikes:
        strike = strikes.match(message.function, flatten_arguments(arguments, plan.signature))
        if strike is not None:
            await _skip_stricken(worker, message, strike, execution.call_repr())
            return

    limits = plan.all(ConcurrencyLimit)
    if limits:
        try:
            slots = [
                (limit.slot(execution.function_name, arguments), limit.max_concurrent)
                for limit in limits
            ]
        except KeyError as error:
            logger.error("Cannot limit %s: %s", _describe(message), error.args[0])
            await worker.finish(message, "failed", failure=Failure("failed", error.args[0]))
            return
        taken = await worker.acquire(message, slots)
        if taken is None:
            if logger.isEnabledFor(logging.INFO):
                logger.info("⏸ %s waits for a free concurrency slot", _describe(message))
            return
        if not taken:
            return

    if not worker.allowed_to_run(message):
        await worker.finish(message, "skipped")  # run_at_most: its cap is spent
        return
    await _run(worker, execution, message)


async def _skip_stricken(worker: Worker, message: Message, strike: Strike, call: str) -> None:
    """Acknowledge a stricken call without running it: no retry, no next perpetual run."""
    worker.stricken[message.function] += 1
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
            "worker": worker.name,
            "outcome": "stricken",
            "strike": str(strike),
        },
    )
    await worker.finish(message, "stricken")


async def _run(worker: Worker, execution: Execution, message: Message) -> None:
    with instrumentation.running(worker.shadow.name, worker.name, execution, message) as span:
        outcome, follow, failure = await _attempt(worker, execution, message, span)
        if follow is not None and instrumentation.carry(span, follow):
            worker.shadow.payloads.seal(follow)  # the context is signed too
    await worker.finish(message, outcome, follow, failure)


async def _attempt(
    worker: Worker, execution: Execution, message: Message, span: Span | None
) -> tuple[str, Message | None, Failure | None]:
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
        "worker": worker.name,
    }
    if verbose:
        logger.info(
            "▶ %s [key=%s attempt=%d]", call, execution.key, execution.attempt, extra=details
        )

    stack = AsyncExitStack()
    context = Context(worker.shadow, worker, execution, stack)
    series = worker.metrics.run_started(message)
    started = time.perf_counter()
    error: Exception | None = None
    try:
        async with stack:
            arguments = await resolve_arguments(plan, context)
            keywords = {**execution.kwargs, **arguments}
            timeout = _find(Timeout, arguments)
            scope = timeout.start() if timeout else contextlib.nullcontext()
            async with scope:
                if plan.is_async:
                    await function(*execution.args, **keywords)
                else:
                    await asyncio.to_thread(function, *execution.args, **keywords)
    except TimeoutError as raised:
        timeout = _find(Timeout, context.arguments)
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
        elapsed = time.perf_counter() - started
        worker.metrics.run_ended(series, elapsed)
    details["duration"] = round(elapsed, 6)

    resolved = context.arguments
    perpetual = _find(Perpetual, resolved)
    follow = _next_run(worker, execution, message, perpetual)

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
        return "completed", follow, None

    retry = _find(Retry, resolved)
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
        retried = replace(
            message,
            attempt=message.attempt + 1,
            when_ms=now_ms() + int(delay.total_seconds() * 1000),
            extra=dict(message.extra),
            holds=[],
        )
        return "failed", worker.shadow.payloads.seal(retried), None

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
    return "failed", follow, Failure.from_exception("failed", error)


def _next_run(
    worker: Worker, execution: Execution, message: Message, perpetual: Perpetual | None
) -> Message | None:
    """The next message of a perpetual chain, or ``None`` when there is none."""
    if perpetual is None or perpetual.cancelled:
        return None
    now = datetime.now(UTC)
    when = perpetual.next_run(execution.when, now)
    payloads = worker.shadow.payloads
    args, kwargs = message.args, message.kwargs
    if perpetual.changed:
        args, kwargs = payloads.encode(tuple(perpetual.args), dict(perpetual.kwargs))
    follow = replace(
        message,
        attempt=1,
        when_ms=to_ms(when),
        args=args,
        kwargs=kwargs,
        extra=dict(message.extra),
        holds=[],
    )
    return payloads.seal(follow)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"
