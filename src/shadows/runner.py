"""Running one message: decode it, resolve its dependencies, call it, record the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .dependencies import Context, Retry, plan_for, resolve_arguments
from .execution import Execution, Message, now_ms

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
    """Run ``message`` on ``worker`` and acknowledge it; never raises but on cancellation."""
    shadow = worker.shadow
    function = shadow.tasks.get(message.function)
    if function is None:
        logger.error(
            "Unknown task %s: no function %r is registered on worker %s (registered: %s)",
            _describe(message),
            message.function,
            worker.name,
            ", ".join(sorted(shadow.tasks)),
        )
        await worker.finish(message, "failed")
        return
    try:
        execution = Execution.from_message(message, function, shadow.codec)
    except Exception as error:
        logger.error(
            "Cannot decode the arguments of %s: %s: %s",
            _describe(message),
            type(error).__name__,
            error,
        )
        await worker.finish(message, "failed")
        return
    if not worker.allowed_to_run(message):
        await worker.finish(message, "completed")
        return
    await _run(worker, execution, message)


async def _run(worker: Worker, execution: Execution, message: Message) -> None:
    function = execution.function
    plan = plan_for(function)
    verbose = logger.isEnabledFor(logging.INFO)
    call = execution.call_repr() if verbose else ""
    details = {"task": execution.function_name, "key": execution.key, "attempt": execution.attempt}
    if verbose:
        logger.info(
            "▶ %s [key=%s attempt=%d]", call, execution.key, execution.attempt, extra=details
        )

    stack = AsyncExitStack()
    context = Context(worker.shadow, worker, execution, stack)
    started = time.perf_counter()
    error: Exception | None = None
    try:
        async with stack:
            arguments = await resolve_arguments(plan, context)
            if plan.is_async:
                await function(*execution.args, **execution.kwargs, **arguments)
            else:
                await asyncio.to_thread(function, *execution.args, **execution.kwargs, **arguments)
    except Exception as raised:
        error = raised
    elapsed = time.perf_counter() - started
    details["duration"] = round(elapsed, 6)

    if error is None:
        details["outcome"] = "completed"
        if verbose:
            logger.info(
                "✔ %s [key=%s attempt=%d] completed in %s",
                call,
                execution.key,
                execution.attempt,
                _duration(elapsed),
                extra=details,
            )
        await worker.finish(message, "completed")
        return

    retry = _find(Retry, context.arguments, execution.kwargs)
    delay = retry.next_delay() if retry else None
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
        follow = replace(
            message,
            attempt=message.attempt + 1,
            when_ms=now_ms() + int(delay.total_seconds() * 1000),
        )
        await worker.finish(message, "failed", follow)
        return

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
    await worker.finish(message, "failed")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"
