"""The tasks the chaos workers run (``--tasks chaos.tasks:tasks``).

Every run appends a ``start`` line and, when the body really ends, an ``end`` line to a
file of its own process under ``$CHAOS_DIR/runs/`` (JSON lines, ``O_APPEND``): the record
lives outside Redis, so it survives Redis restarts, and the lines already written survive a
SIGKILL of the worker. A run cancelled by fencing (or a forced stop) records ``cancelled``
before the cancellation goes on, so that overlap checks see its true interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shadows import (
    ConcurrencyLimit,
    CurrentExecution,
    CurrentShadow,
    CurrentWorker,
    Debounce,
    Execution,
    ExponentialRetry,
    Perpetual,
    RateLimit,
    Retry,
    Shadow,
    Worker,
)

#: Environment variable naming the run directory the workers record into.
DIRECTORY_VARIABLE = "CHAOS_DIR"
#: File whose existence tells perpetual chains to stop (at the end of a run).
STOP_FLAG = "stop-perpetual"
#: How often the perpetual chains run.
PERPETUAL_EVERY = timedelta(milliseconds=700)
HEARTBEAT_EVERY = timedelta(seconds=1)

_descriptor: int | None = None


def directory() -> Path:
    value = os.environ.get(DIRECTORY_VARIABLE)
    if not value:
        raise RuntimeError(f"${DIRECTORY_VARIABLE} is not set: the chaos tasks need it")
    return Path(value)


def _write(record: dict[str, Any]) -> None:
    """Append one line to this process's record file (one ``write``, so never torn)."""
    global _descriptor
    if _descriptor is None:
        runs = directory() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        _descriptor = os.open(
            runs / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
    os.write(_descriptor, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def stop_requested() -> bool:
    return (directory() / STOP_FLAG).exists()


@asynccontextmanager
async def recorded(
    execution: Execution, worker: Worker, extra: dict[str, Any] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Record the start and the true end of one run; yields a dict added to the end line."""
    run = uuid.uuid4().hex[:16]
    common = {
        "r": run,
        "k": execution.key,
        "f": execution.function_name,
        "a": execution.attempt,
        "w": execution.when.timestamp(),
        "p": os.getpid(),
        "n": worker.name,
    }
    _write({"e": "start", **common, "t": time.time(), **(extra or {})})
    details: dict[str, Any] = {}
    outcome = "ok"
    try:
        yield details
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except BaseException:
        outcome = "failed"
        raise
    finally:
        _write({"e": "end", "r": run, "k": execution.key, "p": os.getpid(), "t": time.time(),
                "o": outcome, **details})  # fmt: skip


class Deliberate(Exception):
    """The failure a flaky task raises on purpose."""


async def work(
    ms: int,
    marker: str = "",
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
) -> None:
    """Sleep ``ms`` milliseconds (immediate, future, keyed, long and probe tasks)."""
    async with recorded(execution, worker, {"m": marker} if marker else None):
        await asyncio.sleep(ms / 1000)


async def flaky(
    ms: int,
    fail_until: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    retry: Retry = Retry(attempts=3, delay=timedelta(milliseconds=200)),
) -> None:
    """Fail attempts up to ``fail_until`` on purpose, then succeed."""
    async with recorded(execution, worker):
        await asyncio.sleep(ms / 1000)
        if retry.attempt <= fail_until:
            raise Deliberate(f"attempt {retry.attempt} of {fail_until + 1} fails on purpose")


async def flaky_exponential(
    ms: int,
    fail_until: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    retry: ExponentialRetry = ExponentialRetry(
        attempts=3,
        minimum_delay=timedelta(milliseconds=100),
        maximum_delay=timedelta(milliseconds=400),
    ),
) -> None:
    """Like :func:`flaky`, with exponential delays between the tries."""
    async with recorded(execution, worker):
        await asyncio.sleep(ms / 1000)
        if retry.attempt <= fail_until:
            raise Deliberate(f"attempt {retry.attempt} of {fail_until + 1} fails on purpose")


#: At most this many runs of :func:`limited` at once per customer.
LIMIT = 1


async def limited(
    customer: str,
    ms: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=LIMIT),
) -> None:
    """At most :data:`LIMIT` runs per customer at once, across all workers."""
    async with recorded(execution, worker, {"c": customer}):
        await asyncio.sleep(ms / 1000)


#: :func:`rated` starts at most RATE_LIMIT runs per RATE_PER seconds, across all workers.
RATE_LIMIT = 3
RATE_PER = 2.0


async def rated(
    marker: str,
    ms: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    rate: RateLimit = RateLimit(RATE_LIMIT, per=timedelta(seconds=RATE_PER)),
) -> None:
    """Over the rate limit, postponed to the first free moment (never dropped)."""
    async with recorded(execution, worker, {"m": marker, "rl": 1}):
        await asyncio.sleep(ms / 1000)


#: Submissions of one burst of :func:`debounced` come this close together; the run is
#: due DEBOUNCE_SETTLE after the last, DEBOUNCE_MAX_WAIT after the first at the latest.
DEBOUNCE_SETTLE = 0.25
DEBOUNCE_MAX_WAIT = 0.5


async def debounced(
    burst: str,
    sequence: int,
    marker: str,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    debounce: Debounce = Debounce(
        timedelta(seconds=DEBOUNCE_SETTLE),
        max_wait=timedelta(seconds=DEBOUNCE_MAX_WAIT),
        scope="burst",
    ),
) -> None:
    """One run per burst of submissions (per ``burst``), with the last one's arguments."""
    async with recorded(execution, worker, {"m": marker, "b": burst, "s": sequence}):
        await asyncio.sleep(0.02)


async def chain(
    ms: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    perpetual: Perpetual = Perpetual(every=PERPETUAL_EVERY),
) -> None:
    """A perpetual chain under a fixed key; ends itself once the stop flag exists."""
    async with recorded(execution, worker) as details:
        await asyncio.sleep(ms / 1000)
        if stop_requested():
            perpetual.cancel()
            details["stopped"] = True


async def heartbeat(
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    perpetual: Perpetual = Perpetual(every=HEARTBEAT_EVERY, automatic=True),
) -> None:
    """An automatic perpetual task: every worker that starts makes sure its chain exists."""
    async with recorded(execution, worker) as details:
        await asyncio.sleep(0.05)
        if stop_requested():
            perpetual.cancel()
            details["stopped"] = True


async def cancellable(
    ms: int,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    retry: Retry = Retry(attempts=2, delay=timedelta(milliseconds=200)),
) -> None:
    """A long first attempt that fails on purpose (a retry follows), then a short one that
    succeeds: the producer cancels it while it runs, after which no run of it, retried or
    redelivered, may start."""
    async with recorded(execution, worker):
        if retry.attempt == 1:
            await asyncio.sleep(ms / 1000)
            raise Deliberate("the first attempt fails on purpose")
        await asyncio.sleep(0.02)


async def relay(
    ms: int,
    step: int = 0,
    shadows: Shadow = CurrentShadow(),
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
    retry: Retry = Retry(attempts=None, delay=timedelta(milliseconds=300)),
) -> None:
    """A chain written by hand: each run schedules its successor under its own key (by
    add and by replace in turn), which must run after it, never beside it. Retried for
    ever, so that an add lost to a Redis outage is made again by the retried run."""
    async with recorded(execution, worker) as details:
        await asyncio.sleep(ms / 1000)
        if stop_requested():
            details["stopped"] = True
            return
        when = datetime.now(UTC) + PERPETUAL_EVERY
        schedule = shadows.replace if step % 2 else shadows.add
        await schedule(relay, when=when, key=execution.key)(ms, step + 1)


async def poison(
    marker: str,
    execution: Execution = CurrentExecution(),
    worker: Worker = CurrentWorker(),
) -> None:
    """Kills the worker that runs it (as a task that exhausts memory would): each
    delivery costs a worker, until it is dead-lettered as poison after the delivery limit."""
    async with recorded(execution, worker, {"m": marker}):
        os._exit(137)


tasks: list[Callable[..., Any]] = [
    work,
    flaky,
    flaky_exponential,
    limited,
    rated,
    debounced,
    chain,
    heartbeat,
    relay,
    poison,
    cancellable,
]

if os.environ.get("CHAOS_SABOTAGE"):
    from .sabotage import install

    install(os.environ["CHAOS_SABOTAGE"])
