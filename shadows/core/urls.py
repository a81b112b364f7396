"""What a shadow URL says, checked when a ``Shadow`` is made rather than when it connects.

One server: ``redis://``, ``rediss://`` (TLS), ``unix://``, their ``valkey``/``valkeys``
aliases, and ``memory://`` (in-process). Several: ``redis+cluster://`` (Redis Cluster) and
``redis+sentinel://`` (a master found through Sentinel), with a TLS form (``rediss+``) and
``valkey`` aliases, listing ``host[:port]`` pairs separated by commas. Errors, and URLs
shown anywhere, go through :func:`redact_url`, which hides passwords. Replies must stay
bytes (task arguments are binary): a ``decode_responses`` option is refused.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, parse_url

SINGLE_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys", "memory")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster", "valkey+cluster", "valkeys+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel", "valkey+sentinel", "valkeys+sentinel")
SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES

DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}

#: Query parameters starting with this configure the connections to the sentinels.
SENTINEL_PREFIX = "sentinel_"

_PASSWORD_VALUE = re.compile(r"((?:^|[?&;])[^=&;#]*password[^=&;#]*=)[^&;#]*", re.IGNORECASE)

DECODING = (
    "shadows reads replies as bytes (task arguments are binary), so it cannot use "
    "decode_responses=True"
)


def redact_url(url: str) -> str:
    """``url`` with its passwords (``user:password@``, ``?...password=``) shown as ``***``:
    the only form of a URL that goes into messages, logs and ``repr()``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _PASSWORD_VALUE.sub(r"\1***", url)
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    netloc_end = len(rest) if end < 0 else end
    at = rest.rfind("@", 0, netloc_end)
    if at < 0:
        # A password holding an unencoded "/" or "?" hides the real end of the user
        # info: better to hide too much than too little.
        at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        user = rest[: rest.index(":")]
        rest = f"{user}:***{rest[at:]}"
    query_start = rest.find("?")
    if query_start >= 0:
        rest = rest[:query_start] + _PASSWORD_VALUE.sub(r"\1***", rest[query_start:])
    return f"{scheme}://{rest}"


def invalid(url: str, problem: str) -> ValueError:
    return ValueError(f"Invalid shadow URL {redact_url(url)!r}: {problem}")


def is_memory(url: str) -> bool:
    return url.lower().startswith("memory://")


def is_cluster(url: str) -> bool:
    """Whether (normalized) ``url`` names a Redis Cluster."""
    return url.startswith(CLUSTER_SCHEMES)


def single_pool(url: str) -> bool:
    """Whether the client of (normalized) ``url`` talks to one server over one pool of
    sockets, from which a producer may set a connection aside (its lane): not the
    in-process server (no sockets to save work on), nor a cluster (a pool per node)."""
    return not is_memory(url) and not is_cluster(url)


@dataclass(frozen=True)
class Deployment:
    """A Redis Cluster or Sentinel URL, taken apart."""

    kind: Literal["cluster", "sentinel"]
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The master's name the sentinels know it by (Sentinel only).
    service: str = ""
    db: int = 0
    #: Options of the connections to the data nodes, typed as redis-py takes them.
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Options of the connections to the sentinels (``sentinel_`` parameters, unprefixed).
    sentinel_options: dict[str, Any] = field(default_factory=dict, repr=False)


def normalize_url(url: str) -> str:
    """Validate ``url`` and return it in the form the clients understand (``valkey``
    schemes become ``redis`` ones). Raises ``ValueError`` naming the problem."""
    if not isinstance(url, str) or not url.strip():
        shown = repr(url) if isinstance(url, str) else f"of type {type(url).__name__}"
        raise ValueError(f"Invalid shadow URL {shown}: expected e.g. redis://localhost:6379/0")
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SCHEMES:
        raise invalid(url, "the scheme must be one of " + ", ".join(f"{s}://" for s in SCHEMES))
    normalized = scheme.replace("valkey", "redis") + url[len(scheme) :]
    if scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        parse_deployment(normalized)
        return normalized
    if scheme == "memory":
        return url
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as error:
        raise invalid(url, redact_url(str(error))) from None
    _refuse_decoding(url, parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "unix":
        if not parts.path:
            raise invalid(url, "unix:// needs a socket path")
        return url
    if not parts.hostname:
        raise invalid(url, "no host given")
    if port is not None and not 0 < port < 65536:
        raise invalid(url, f"port {port} is out of range")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise invalid(url, f"the database must be a number, not {database!r}")
    return normalized


def _refuse_decoding(url: str, pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        # redis-py's reading of a boolean URL option
        if name == "decode_responses" and value.upper() not in ("", "0", "F", "FALSE", "N", "NO"):
            raise invalid(url, f"{DECODING}: remove that option")


def parse_deployment(url: str) -> Deployment | None:
    """The cluster or sentinel ``url`` (normalized) taken apart; ``None`` for the
    one-server schemes."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        return None
    kind: Literal["cluster", "sentinel"] = "cluster" if scheme.endswith("cluster") else "sentinel"
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise invalid(url, "a URL fragment (#...) means nothing here")
    rest, _, query = rest.partition("?")
    at = rest.rfind("@")
    userinfo, location = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    netloc, _, path = location.partition("/")
    username = password = None
    if at >= 0:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_address(url, text, DEFAULT_PORTS[kind]) for text in netloc.split(","))
    segments = [unquote(segment) for segment in path.split("/")] if path else []
    while segments and not segments[-1]:
        segments.pop()
    service, db = "", 0
    if kind == "cluster":
        if segments not in ([], ["0"]):
            raise invalid(url, "a Redis Cluster has only database 0 (no path, or /0)")
    else:
        if not segments or not segments[0]:
            raise invalid(url, f"name the master's service: {scheme}://host:26379/mymaster/0")
        if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
            raise invalid(url, "the path must be /service_name or /service_name/db (a number)")
        service, db = segments[0], int(segments[1]) if len(segments) == 2 else 0
    options, sentinel_options = _options(url, kind, query)
    if options.get("decode_responses"):
        raise invalid(url, f"{DECODING}: remove that option")
    username = options.pop("username", username)  # as parameters, as redis-py allows too
    password = options.pop("password", password)
    return Deployment(
        kind=kind,
        tls=scheme.startswith("rediss"),
        hosts=hosts,
        username=username,
        password=password,
        service=service,
        db=db,
        options=options,
        sentinel_options=sentinel_options,
    )


def _address(url: str, text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # an IPv6 address
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise invalid(url, f"malformed IPv6 address {text!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise invalid(url, "each host of the list needs a name (host[:port],host[:port]...)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise invalid(url, f"the port of {host} must be from 1 to 65535, not {port_text!r}")
    return host, int(port_text)


def _options(url: str, kind: str, query: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The query's options for the data nodes and for the sentinels, typed by redis-py's
    own rules, each checked against what its connections accept."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise invalid(url, "malformed query string") from None
    data: list[tuple[str, str]] = []
    sentinel: list[tuple[str, str]] = []
    for name, value in pairs:
        if kind == "sentinel" and name.startswith(SENTINEL_PREFIX):
            sentinel.append((name[len(SENTINEL_PREFIX) :], value))
        else:
            data.append((name, value))
    accepted = cluster_options() if kind == "cluster" else _connection_options()
    return (
        _typed(url, data, accepted, ""),
        _typed(url, sentinel, _connection_options(), SENTINEL_PREFIX),
    )


def _typed(
    url: str, pairs: list[tuple[str, str]], accepted: frozenset[str], prefix: str
) -> dict[str, Any]:
    for name, _ in pairs:
        if name not in accepted:
            raise invalid(url, f"unknown option {prefix + name!r}")
    if not pairs:
        return {}
    try:  # redis-py's own URL parser types each option (and rejects bad values)
        typed = parse_url("redis://host?" + urlencode(pairs))
    except ValueError as error:
        message = str(error).replace("'", f"'{prefix}", 1)
        raise invalid(url, message) from None
    options: dict[str, Any] = dict(typed)
    options.pop("host", None)
    return options


@cache
def _connection_options() -> frozenset[str]:
    names: set[str] = {"max_connections", "timeout"}  # the connection pool's
    for connection in (*Connection.__mro__, *SSLConnection.__mro__):
        init = vars(connection).get("__init__")
        if init is not None and connection is not object:
            names.update(inspect.signature(init).parameters)
    return frozenset(names - {"self", "kwargs", "host", "port", "db", "connection_pool"})


@cache
def cluster_options() -> frozenset[str]:
    """The settings a cluster URL may give: ``RedisCluster``'s own."""
    names = set(inspect.signature(RedisCluster.__init__).parameters)
    return frozenset(names - {"self", "host", "port", "startup_nodes", "db", "path", "ssl"})
