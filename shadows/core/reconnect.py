"""Riding out Redis outages: which errors mean "unreachable", and how long to wait."""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Errors that mean "Redis is unreachable right now", as opposed to a bug or bad data. On
#: a cluster: no master serves the slot yet (a failover), or a connection to one node
#: learns that the slot has moved (a failover, a migration): try again a little later.
CONNECTION_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    MovedError,
    AskError,
)


class Backoff:
    """Exponential delays for reconnecting: 0.1 s doubling up to ``cap``."""

    def __init__(self, cap: float) -> None:
        self.cap = max(cap, 0.01)
        self._delay = 0.0

    @property
    def failing(self) -> bool:
        """Whether a delay has been handed out since the last success."""
        return self._delay > 0

    def next(self) -> float:
        self._delay = min(self.cap, 0.1 if not self._delay else self._delay * 2)
        return self._delay

    def reset(self) -> None:
        self._delay = 0.0


async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, waking early once ``event`` is set."""
    if seconds <= 0 or event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
