"""Retry policies: what happens after a task raises."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from shadows.behaviours.base import Context, Dependency


class Retry(Dependency):
    """Retry a failed task up to ``attempts`` tries in total (``None``: forever).

    Each retry is scheduled ``delay`` after the failure under the same key, carrying the
    next attempt number. Inside the task, ``retry.attempt`` is the current try (from 1).
    """

    single = True

    def __init__(self, attempts: int | None = 1, delay: timedelta = timedelta(0)) -> None:
        if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
            raise ValueError(f"attempts must be a positive integer or None, not {attempts!r}")
        if not isinstance(delay, timedelta) or delay < timedelta(0):
            raise ValueError(f"delay must be a non-negative timedelta, not {delay!r}")
        self.attempts = attempts
        self.delay = delay
        self.attempt = 1

    async def resolve(self, context: Context, parameter: str) -> Any:
        bound = copy.copy(self)
        bound.attempt = context.execution.attempt
        return bound

    def delay_after(self, attempt: int) -> timedelta:
        """How long to wait after try ``attempt`` failed."""
        return self.delay

    def next_delay(self) -> timedelta | None:
        """The delay before the next try, or ``None`` when the tries are used up."""
        if self.attempts is not None and self.attempt >= self.attempts:
            return None
        return self.delay_after(self.attempt)

    def describe(self) -> str:
        return f"{type(self).__name__}(attempts={self.attempts})"

    def __repr__(self) -> str:
        return f"Retry(attempts={self.attempts}, delay={self.delay!r}, attempt={self.attempt})"


class ExponentialRetry(Retry):
    """Retry with a delay doubling from ``minimum_delay``, capped at ``maximum_delay``."""

    def __init__(
        self,
        attempts: int | None = 1,
        minimum_delay: timedelta = timedelta(seconds=1),
        maximum_delay: timedelta = timedelta(seconds=64),
    ) -> None:
        super().__init__(attempts, minimum_delay)
        if not isinstance(maximum_delay, timedelta) or maximum_delay < minimum_delay:
            raise ValueError("maximum_delay must be a timedelta no shorter than minimum_delay")
        self.minimum_delay = minimum_delay
        self.maximum_delay = maximum_delay

    def delay_after(self, attempt: int) -> timedelta:
        if attempt > 62:  # avoid huge integers; the cap has long been reached
            return self.maximum_delay
        delay: timedelta = self.minimum_delay * (2 ** (attempt - 1))
        return min(delay, self.maximum_delay)

    def __repr__(self) -> str:
        return (
            f"ExponentialRetry(attempts={self.attempts}, minimum_delay={self.minimum_delay!r}, "
            f"maximum_delay={self.maximum_delay!r}, attempt={self.attempt})"
        )
