"""Built-in tasks, registered on every shadow: handy for smoke tests and drills."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any

from shadows.behaviours.context import TaskLogger
from shadows.core.annotations import Logged


async def trace(
    message: Annotated[str, Logged],
    log: logging.LoggerAdapter[logging.Logger] = TaskLogger(),
) -> None:
    """Log ``message``: proves that work flows from a producer to a worker."""
    log.info("trace: %s", message)


async def fail(message: Annotated[str, Logged]) -> None:
    """Raise an error carrying ``message``: exercises failure handling and alerts."""
    raise RuntimeError(message)


async def sleep(seconds: Annotated[float, Logged]) -> None:
    """Sleep ``seconds``: occupies a worker slot, for load and shutdown drills."""
    await asyncio.sleep(seconds)


standard_tasks: list[Callable[..., Any]] = [trace, fail, sleep]
