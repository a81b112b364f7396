"""Tasks for the worker process of the browser tests: each run is recorded in a file."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

from shadows import Logged, Progress
from worker_tasks import record


async def greet(path: str, name: Annotated[str, Logged]) -> None:
    record(path, "greet", name)


def fragile(path: str, flag: str) -> None:
    """Fails while the file ``flag`` exists (a plain function: workers run those too)."""
    if os.path.exists(flag):
        raise RuntimeError("the flag is up")
    record(path, "fragile", "ok")


async def dawdle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def crawl(path: str, pages: int, seconds: float, progress: Progress = Progress()) -> None:
    """Reports its progress page by page; records whether it got to the end."""
    await progress.set_total(pages)
    await progress.set_message("crawling")
    try:
        for _ in range(pages):
            await asyncio.sleep(seconds)
            await progress.increment()
    except asyncio.CancelledError:
        record(path, "crawl", "cancelled")
        raise
    record(path, "crawl", "done")


tasks: list[Any] = [greet, fragile, dawdle, crawl]
