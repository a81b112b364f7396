"""How the pages write times, durations, sizes and URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from jinja2 import Environment


def span(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def moment(ms: int | None) -> str:
    """UTC to the millisecond: operators compare these with log lines."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def relative(ms: int | None, now_ms: int) -> str:
    """``in 5m 00s`` or ``3.0s ago``."""
    if not ms:
        return "-"
    delta = (ms - now_ms) / 1000
    if abs(delta) < 0.05:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def safe_url(url: str) -> str:
    """``url`` without its password, in the address or as a ``password=`` query parameter
    (user names stay: they say which ACL user it is)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    result = parts.geturl()
    if url.startswith(f"{parts.scheme}://") and not result.startswith(f"{parts.scheme}://"):
        result = result.replace(":", "://", 1)  # unix:///path keeps its slashes
    return result


def number(value: Any) -> str:
    """Thousands separated: ``100,000``."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def install(env: Environment) -> None:
    env.filters.update(
        span=span, moment=moment, relative=relative, number=number, quote=lambda s: quote(s)
    )
