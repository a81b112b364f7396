"""Turning a shadow URL into a Redis client.

``redis://``, ``rediss://`` and ``unix://`` go to redis-py; ``valkey://`` and ``valkeys://``
are the same protocol under another name; ``memory://`` is an in-process server (fakeredis
with its Lua engine) shared by every client of the same URL in this process.

Every reply must come back as bytes (task arguments are binary), so a ``decode_responses``
URL option or pool is refused. URLs are shown only through :func:`redact_url`, which hides
passwords.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
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
    "max_connections": 100,
    "timeout": 20,  # seconds to wait for a free connection of the pool
}

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _short_retry() -> Retry:
    # Every write we send is idempotent, so a quick retry is safe; longer outages are
    # handled by the callers' own reconnection loops.
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)


_USERINFO_PASSWORD = re.compile(r"^([^:/?#]*://[^/?#@:]*:)[^/?#]*@")
_QUERY_PASSWORD = re.compile(r"([?&;][^=&;#]*password[^=&;#]*=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its passwords (``user:password@``, ``?password=``) shown as ``***``:
    the only form of a URL that goes into messages, logs and ``repr()``."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = ""
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        start = url.index(netloc)
        user = userinfo.split(":", 1)[0]
        url = f"{url[:start]}{user}:***@{host}{url[start + len(netloc) :]}"
    else:  # not parseable as a URL: hide what looks like a password anyway
        url = _USERINFO_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def normalize_url(url: str) -> str:
    """Validate ``url`` and return it in the form redis-py understands.

    Raises ``ValueError`` with a message naming the problem (and no password).
    """
    if not isinstance(url, str) or not url.strip():
        shown = repr(url) if isinstance(url, str) else f"of type {type(url).__name__}"
        raise ValueError(f"Invalid shadow URL {shown}: expected e.g. redis://localhost:6379/0")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as error:
        raise ValueError(f"Invalid shadow URL {shown!r}: {redact_url(str(error))}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"Invalid shadow URL {shown!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "memory":
        return url
    _refuse_decoding(parts.query, shown)
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"Invalid shadow URL {shown!r}: unix:// needs a socket path")
        return url
    if not parts.hostname:
        raise ValueError(f"Invalid shadow URL {shown!r}: no host given")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"Invalid shadow URL {shown!r}: port {port} is out of range")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError(
            f"Invalid shadow URL {shown!r}: the database must be a number, not {database!r}"
        )
    scheme = _ALIASES.get(scheme, scheme)
    return scheme + url[len(parts.scheme) :]


_DECODING = (
    "shadows reads replies as bytes (task arguments are binary), so it cannot use "
    "decode_responses=True"
)


def _refuse_decoding(query: str, shown: str) -> None:
    for name, value in parse_qsl(query, keep_blank_values=True):
        # redis-py's reading of a boolean URL option
        if name == "decode_responses" and value.upper() not in ("", "0", "F", "FALSE", "N", "NO"):
            raise ValueError(f"Invalid shadow URL {shown!r}: {_DECODING}: remove that option")


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


def forget_memory_server(url: str) -> None:
    """Drop the in-process server behind ``url`` and its data (tests make many)."""
    with _memory_lock:
        _memory_servers.pop(url, None)


def create_pool(url: str) -> ConnectionPool:
    """A connection pool for a (normalized) network URL."""
    options = dict(DEFAULT_CLIENT_OPTIONS)
    if url.lower().startswith("unix://"):
        options.pop("socket_keepalive")  # TCP only
    # Blocking: a burst of concurrent commands (adds awaited together) waits for a free
    # connection instead of failing with "Too many connections".
    pool = BlockingConnectionPool.from_url(url, retry=_short_retry(), **options)
    encoding = str(pool.connection_kwargs.get("encoding", "utf-8")).lower()
    if _hiredis_pack is not None and encoding in ("utf-8", "utf8"):
        pool.connection_class = _fast_packing(pool.connection_class)
    return pool


_hiredis_pack: Callable[..., bytes] | None
try:  # hiredis parses replies for redis-py by itself; commands it does not pack for asyncio
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _hiredis_pack = None

_PLAIN = (str, bytes, int)
_fast_classes: dict[type[Any], type[Any]] = {}


class _HiredisPacking:
    """Packs commands with hiredis (ten times faster than redis-py's own packer for the
    long argument lists of our scripts), when every argument is a str, bytes or int."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (
            type(first) is str
            and " " not in first
            and all(type(arg) in _PLAIN for arg in args)
            and _hiredis_pack is not None
        ):
            return [_hiredis_pack(args)]
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


def _fast_packing(connection_class: type[Any]) -> type[Any]:
    fast = _fast_classes.get(connection_class)
    if fast is None:
        fast = _fast_classes[connection_class] = type(
            connection_class.__name__, (_HiredisPacking, connection_class), {}
        )
    return fast


def create_client(url: str, pool: ConnectionPool | None) -> Redis:
    """A client for ``url``, or over the caller's own ``pool``."""
    if pool is not None:
        if pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                f"The connection pool given to Shadow(connection_pool=...) has {_DECODING}: "
                "give it a pool made without decode_responses"
            )
        return Redis(connection_pool=pool)
    if is_memory(url):
        from fakeredis import FakeAsyncRedis

        client: Redis = FakeAsyncRedis(server=memory_server(url))
        return client
    # from_pool: the client owns the pool, so closing the client closes its sockets
    return Redis.from_pool(create_pool(url))


def private_client(client: Redis, connections: int = 1) -> Redis:
    """A client for the same server, with the same settings, as ``client``, on a pool of
    its own of at most ``connections``: for work that must neither take ``client``'s
    connections nor wait behind its commands (health and metrics probes)."""
    pool = client.connection_pool
    own = BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=connections,
        timeout=5,
        **pool.connection_kwargs,
    )
    return Redis.from_pool(own)
