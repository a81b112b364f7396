"""Tasks for worker subprocesses started by the tests: each run is recorded in a file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated, Any

from shadows import ConcurrencyLimit, Logged


def record(path: str, *words: object) -> None:
    line = " ".join(str(word) for word in words) + "\n"
    with open(path, "a") as file:
        file.write(line)


async def record_and_sleep(path: str, label: str, seconds: float) -> None:
    record(path, "start", label, os.getpid(), time.time())
    await asyncio.sleep(seconds)
    record(path, "end", label, os.getpid(), time.time())


def read_records(path: str | Path) -> list[list[str]]:
    try:
        return [line.split() for line in Path(path).read_text().splitlines()]
    except FileNotFoundError:
        return []


tasks: list[Any] = [record_and_sleep]


async def limited(
    path: str,
    customer: str,
    seconds: float,
    limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1),
) -> None:
    """One run per customer at a time, recorded like record_and_sleep."""
    await record_and_sleep(path, customer, seconds)


tasks.append(limited)


async def pay(
    order: Annotated[str, Logged],
    card: str,
    items: Annotated[list[str], Logged(length_only=True)],
) -> None:
    """Shows its order and the number of items in log lines, never the card."""
    if order.startswith("refused"):
        raise ValueError(f"order {order} refused")


#: For the read-only commands' --tasks (the test workers do not run it).
payments: list[Any] = [pay]


async def rolled_out(path: str, label: str) -> None:
    """A task only the "new release" registers (see ``newer``)."""
    record(path, "start", label, os.getpid(), time.time())


#: The tasks of a newer release: one more than ``tasks``.
newer: list[Any] = [record_and_sleep, rolled_out]


async def kill_my_worker(path: str, label: str) -> None:
    """Kills the worker process that runs it (a task that exhausts memory, say)."""
    record(path, "start", label, os.getpid(), time.time())
    os._exit(137)


tasks.append(kill_my_worker)
