"""Checks of a worker's arguments, and its default name."""

from __future__ import annotations

import itertools
import os
import socket
from datetime import timedelta

_instances = itertools.count(1)


def default_worker_name() -> str:
    """``host-pid``, with a suffix for the second and later workers of one process."""
    number = next(_instances)
    base = f"{socket.gethostname()}-{os.getpid()}"
    return base if number == 1 else f"{base}-{number}"


def checked_seconds(value: timedelta, name: str, minimum: float = 0.0) -> float:
    """``value`` in seconds; a clear error for a wrong type or a value below ``minimum``."""
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    seconds = value.total_seconds()
    if seconds < minimum:
        raise ValueError(f"{name} must be at least {minimum} s, not {seconds} s")
    return seconds


def checked_port(value: int | None, name: str) -> int | None:
    """A port number (0: a free one), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a port number from 0 to 65535, not {value!r}")
    return value


def checked_count(value: int, name: str) -> int:
    """A positive integer (``concurrency``, ``max_deliveries``)."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value
