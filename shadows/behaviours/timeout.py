"""``Timeout``: cancel a task that runs too long."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta
from typing import Any

from shadows.behaviours.base import Context, Dependency


class Timeout(Dependency):
    """Cancel the task body once it has run for ``base``.

    A timed-out run raises ``TimeoutError``: it counts as a failure and is retried by the
    task's retry policy. Inside the task, ``timeout.extend()`` pushes the deadline back by
    ``base`` (or by ``by``) and ``timeout.remaining()`` tells the time left. Synchronous
    tasks run in a thread that cannot be interrupted: the worker stops waiting for them at
    the deadline, but the thread runs on until it returns.
    """

    single = True

    def __init__(self, base: timedelta) -> None:
        if not isinstance(base, timedelta) or base <= timedelta(0):
            raise ValueError(f"Timeout needs a positive timedelta, not {base!r}")
        self.base = base
        self._deadline: float | None = None
        self._scope: asyncio.Timeout | None = None

    async def resolve(self, context: Context, parameter: str) -> Any:
        bound = copy.copy(self)
        bound._deadline = None
        bound._scope = None
        return bound

    def start(self) -> asyncio.Timeout:
        """The timeout scope the worker wraps around the task body."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.base.total_seconds()
        self._scope = asyncio.timeout_at(self._deadline)
        return self._scope

    def expired(self) -> bool:
        """Whether this timeout cancelled the task body."""
        return self._scope is not None and self._scope.expired()

    def remaining(self) -> timedelta:
        """Time left before the task is cancelled (the full base before it starts)."""
        if self._deadline is None:
            return self.base
        left = self._deadline - asyncio.get_running_loop().time()
        return timedelta(seconds=max(0.0, left))

    def extend(self, by: timedelta | None = None) -> None:
        """Push the deadline back by ``by`` (default: the base duration)."""
        extra = (by if by is not None else self.base).total_seconds()
        if self._deadline is None:
            self.base += timedelta(seconds=extra)
            return
        self._deadline += extra
        if self._scope is not None:
            self._scope.reschedule(self._deadline)

    def describe(self) -> str:
        return f"Timeout({self.base})"

    def __repr__(self) -> str:
        return f"Timeout({self.base!r})"
