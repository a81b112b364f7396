"""Human durations (``500ms``, ``30s``, ``10m``, ``1h30m``, ``2.5``) for the CLI and env vars."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|sec|min|s|m|h|d)")
_PLAIN = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def parse_duration(text: str) -> timedelta:
    """Parse ``text``; a bare number means seconds. Raises ``ValueError`` when malformed."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 500ms, 30s, 10m or 1h, not {text!r}")
    cleaned = text.strip().lower()
    if _PLAIN.fullmatch(cleaned):
        return _checked(float(cleaned), text)
    position = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if cleaned[position : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    else:
        if position and not cleaned[position:].strip():
            return _checked(total, text)
    raise ValueError(f"invalid duration {text!r}: use e.g. 500ms, 30s, 10m, 1h, 1h30m or 2.5")


def _checked(seconds: float, text: str) -> timedelta:
    if not math.isfinite(seconds) or seconds > 10 * 365 * 86400:
        raise ValueError(f"invalid duration {text!r}: too large")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration`, for help texts and tables."""
    seconds = value.total_seconds()
    if seconds < 1 and seconds != 0:
        return f"{_plain(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{_plain(seconds / size)}{unit}"
    return f"{_plain(seconds)}s"


def _plain(number: float) -> str:
    """A number without exponent notation or trailing zeros."""
    return f"{number:.6f}".rstrip("0").rstrip(".")
