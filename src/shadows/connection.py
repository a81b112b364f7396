"""Turning a shadow URL into a Redis client.

``redis://``, ``rediss://`` and ``unix://`` go to redis-py; ``valkey://`` and ``valkeys://``
are the same protocol under another name; ``memory://`` is an in-process server (fakeredis
with its Lua engine) shared by every client of the same URL in this process.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys", "memory")
_ALIASES = {"valkey": "redis", "valkeys": "rediss"}

#: Client defaults where the URL says nothing: a paused or unreachable server must surface
#: as an error within seconds, not hang a worker forever.
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
}

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _short_retry() -> Retry:
    # Every write we send is idempotent, so a quick retry is safe; longer outages are
    # handled by the callers' own reconnection loops.
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)


def normalize_url(url: str) -> str:
    """Validate ``url`` and return it in the form redis-py understands.

    Raises ``ValueError`` with a message naming the problem.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"Invalid shadow URL {url!r}: expected e.g. redis://localhost:6379/0")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as error:
        raise ValueError(f"Invalid shadow URL {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"Invalid shadow URL {url!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "memory":
        return url
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"Invalid shadow URL {url!r}: unix:// needs a socket path")
        return url
    if not parts.hostname:
        raise ValueError(f"Invalid shadow URL {url!r}: no host given")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"Invalid shadow URL {url!r}: port {port} is out of range")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError(
            f"Invalid shadow URL {url!r}: the database must be a number, not {database!r}"
        )
    scheme = _ALIASES.get(scheme, scheme)
    return scheme + url[len(parts.scheme) :]


def is_memory(url: str) -> bool:
    return url.lower().startswith("memory://")


def memory_server(url: str) -> Any:
    """The in-process fake server behind ``url`` (one per distinct URL)."""
    from fakeredis import FakeServer

    with _memory_lock:
        server = _memory_servers.get(url)
        if server is None:
            server = _memory_servers[url] = FakeServer(version=(7, 0))
        return server


def create_pool(url: str) -> ConnectionPool:
    """A connection pool for a (normalized) network URL."""
    options = dict(DEFAULT_CLIENT_OPTIONS)
    if url.lower().startswith("unix://"):
        options.pop("socket_keepalive")  # TCP only
    return ConnectionPool.from_url(url, retry=_short_retry(), **options)


def create_client(url: str, pool: ConnectionPool | None) -> Redis:
    """A client for ``url``, or over the caller's own ``pool``."""
    if pool is not None:
        return Redis(connection_pool=pool)
    if is_memory(url):
        from fakeredis import FakeAsyncRedis

        client: Redis = FakeAsyncRedis(server=memory_server(url))
        return client
    # from_pool: the client owns the pool, so closing the client closes its sockets
    return Redis.from_pool(create_pool(url))
