"""Noticing a cancellation that something below us swallowed.

On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to send every command) can lose
a cancel that arrives just as the awaited operation finishes: the task is marked as
cancelling, yet runs on as if nothing happened. A worker loop that is cancelled at such a
moment would never end. The loops that live as long as a worker hold a :class:`CancelGuard`
and check it every turn, so such a cancel still stops them one turn later.
"""

from __future__ import annotations

import asyncio


class CancelGuard:
    """Raises :class:`asyncio.CancelledError` once the current task has had a cancel
    requested since the guard was made, even if that cancel was swallowed."""

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._baseline = self._task.cancelling() if self._task is not None else 0

    def check(self) -> None:
        if self._task is not None and self._task.cancelling() > self._baseline:
            raise asyncio.CancelledError
