"""Turning a shadow URL (checked by :mod:`urls`) into a Redis client.

One server: a redis-py client over a blocking pool. ``memory://``: an in-process server
(fakeredis with its Lua engine) shared by every client of the same URL in this process.
``redis+cluster://``: redis-py's ``RedisCluster``. ``redis+sentinel://``: a client of the
master the sentinels name, over a blocking pool that follows failovers.

Every reply must come back as bytes (task arguments are binary), so a ``decode_responses``
pool is refused here (and such a URL option by :mod:`urls`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, SSLConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shadows.core.mixins import mixed
from shadows.core.sentinel_pool import BlockingSentinelPool, asking_the_sentinels
from shadows.core.urls import DECODING, Deployment, cluster_options, parse_deployment
from shadows.core.urls import is_memory as is_memory  # this module was their home
from shadows.core.urls import normalize_url as normalize_url
from shadows.core.urls import redact_url as redact_url

#: Client defaults where the URL says nothing: a paused or unreachable server must surface
#: as an error within seconds, not hang a worker forever.
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 10.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "max_connections": 100,
    "timeout": 20,  # seconds to wait for a free connection of the pool
}

#: Connections per node of a cluster client. redis-py's cluster client has no blocking
#: pool: past this many connections to one node a command fails (MaxConnectionsError)
#: instead of waiting, so the limit is set high enough for bursts of concurrent adds.
CLUSTER_MAX_CONNECTIONS = 1000
PRIVATE_CLUSTER_CONNECTIONS = 16

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def _short_retry() -> Retry:
    # Every write we send is idempotent, so a quick retry is safe; longer outages are
    # handled by the callers' own reconnection loops.
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)


def no_retry() -> Retry:
    """For the commands that deliver messages (XREADGROUP, XAUTOCLAIM, a takeover's
    claim): a retried one delivers again, so the first delivery's reply, lost with its
    connection, would strand a message in the pending list (or count it twice). The
    reader recovers from its own pending list instead (:mod:`shadows.worker.reader`)."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=0)


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
    pool.connection_class = _direct_sending(pool.connection_class)
    if _fast_encoding(pool.connection_kwargs):
        pool.connection_class = _fast_packing(pool.connection_class)
    return pool


_hiredis_pack: Callable[..., bytes] | None
try:  # hiredis parses replies for redis-py by itself; commands it does not pack for asyncio
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _hiredis_pack = None

_PLAIN = frozenset({str, bytes, int})


@functools.cache
def _driver() -> Any:
    """redis-py 8's description of the client (made at the first connection: it reads
    the package's metadata), or ``None`` before redis-py 8, which reads it at import."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # pragma: no cover - redis-py before 8
        return None
    return DriverInfo()


class _DirectSending:
    """Sends a command without a task and a timer when the socket takes it at once, and
    describes the client once for all connections. Mixed in right above redis-py's class,
    under every other behaviour, whose own sends (asking the sentinels) then come first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # redis-py 8 reads its own package metadata for every new connection (1.3 ms of
        # CPU each, to name itself in CLIENT SETINFO): one description serves them all.
        if not {"driver_info", "lib_name", "lib_version"} & set(kwargs):
            driver = _driver()
            if driver is not None:
                kwargs["driver_info"] = driver
        super().__init__(*args, **kwargs)

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """redis-py runs every send under ``asyncio.wait_for`` (a task, a timer and their
        callbacks: about a tenth of the CPU of a short command). A send the kernel takes
        whole needs no timeout: only one that must wait for the socket to drain (or met
        an error) waits, under the socket timeout, as redis-py's own does."""
        writer = getattr(self, "_writer", None)
        connected: bool = self.is_connected  # type: ignore[attr-defined]
        if writer is None or not connected or not isinstance(command, list):
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        transport = writer.transport
        if transport.is_closing():
            await super().send_packed_command(command, False)  # type: ignore[misc]
            return
        try:
            writer.writelines(command)
            if transport.get_write_buffer_size() == 0 and not transport.is_closing():
                return  # all of it is with the kernel
            await asyncio.wait_for(writer.drain(), self.socket_timeout)  # type: ignore[attr-defined]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as error:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error while writing to socket. {error}.") from error
        except BaseException:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


def _direct_sending(connection_class: type[Any]) -> type[Any]:
    return mixed(_DirectSending, connection_class)


class _HiredisPacking:
    """Packs commands with hiredis (ten times faster than redis-py's own packer for the
    long argument lists of our scripts), when every argument is a str, bytes or int."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (
            type(first) is str
            and " " not in first
            and _PLAIN.issuperset(map(type, args))  # at C speed: scripts have many
            and _hiredis_pack is not None
        ):
            return [_hiredis_pack(args)]
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


def _fast_packing(connection_class: type[Any]) -> type[Any]:
    return mixed(_HiredisPacking, connection_class)


class _FollowsFailovers:
    """Errors that mean "this server is no longer the master to write to" become
    connection errors, so that callers reconnect (through the sentinels or the cluster's
    map: to the new master) and retry, as for a master that went away:

    * ``UNBLOCKED ... instance state changed``: a command blocked on a master that a
      failover turned into a replica;
    * ``NOREPLICAS``: a master short of the replicas its ``min-replicas-to-write`` asks for,
      such as an old master that a planned failover has not demoted yet (writes it would
      accept are lost once it is: see docs/scaling.md).
    """

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as error:
            text = str(error)
            if text.startswith("NOREPLICAS") or (
                text.startswith("UNBLOCKED") and "state changed" in text
            ):
                await self.disconnect()  # type: ignore[attr-defined]
                raise RedisConnectionError(f"Not the master to write to: {text}") from None
            raise


def _following_failovers(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` for servers that a failover may demote (Sentinel, Cluster)."""
    return mixed(_FollowsFailovers, connection_class)


def _fast_encoding(connection_kwargs: dict[str, Any]) -> bool:
    encoding = str(connection_kwargs.get("encoding", "utf-8")).lower()
    return _hiredis_pack is not None and encoding in ("utf-8", "utf8")


def create_client(url: str, pool: ConnectionPool | None) -> Redis:
    """A client for ``url``, or over the caller's own ``pool``."""
    if pool is not None:
        if pool.connection_kwargs.get("decode_responses"):
            raise ValueError(
                f"The connection pool given to Shadow(connection_pool=...) has {DECODING}: "
                "give it a pool made without decode_responses"
            )
        return Redis(connection_pool=pool)
    if is_memory(url):
        from fakeredis import FakeAsyncRedis

        client: Redis = FakeAsyncRedis(server=memory_server(url))
        return client
    deployment = parse_deployment(url)
    if deployment is not None and deployment.kind == "cluster":
        return cluster_client(deployment)
    if deployment is not None:
        return sentinel_client(deployment)
    # from_pool: the client owns the pool, so closing the client closes its sockets
    return Redis.from_pool(create_pool(url))


def held_connections(client: Redis | RedisCluster) -> list[Any]:
    """Every connection object ``client`` holds, those to the sentinels and to each node of
    a cluster included (to close their sockets without awaiting anything)."""
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        nodes = {node.name: node for node in manager.startup_nodes.values()}
        nodes.update(manager.nodes_cache)
        return [connection for node in nodes.values() for connection in node._connections]
    pools: list[Any] = [client.connection_pool]
    if isinstance(client.connection_pool, SentinelConnectionPool):
        sentinels = client.connection_pool.sentinel_manager.sentinels
        pools += [sentinel.connection_pool for sentinel in sentinels]
    return [
        connection
        for pool in pools
        for connection in (
            *getattr(pool, "_available_connections", ()),
            *getattr(pool, "_in_use_connections", ()),
        )
    ]


def connection_options(client: Redis | RedisCluster) -> dict[str, Any]:
    """The settings the connections of ``client`` are made with."""
    if isinstance(client, RedisCluster):
        return client.connection_kwargs
    return client.connection_pool.connection_kwargs


def delivering_client(client: Redis | RedisCluster) -> Redis:
    """A client of ``client``'s server(s) without automatic retries (:func:`no_retry`),
    on two connections of its own (a blocking read and its ``CLIENT UNBLOCK``), which
    the caller closes; ``memory://`` loses no reply: its own client."""
    if type(client).__module__.startswith("fakeredis"):
        return cast(Redis, client)
    return private_client(client, connections=2, retry=no_retry())


async def node_client(client: Redis | RedisCluster, key: str, retry: Retry | None = None) -> Redis:
    """A client of the one server holding ``key``, for what must run on a server rather
    than on a cluster (a blocking read on a connection of its own, then ``CLIENT
    UNBLOCK`` for it): ``client`` itself, or on a cluster a new client of the master that
    serves the key's slot now, which the caller closes. After a failover or a slot
    migration its commands fail with MOVED or ASK, which count as an outage
    (:data:`reconnect.CONNECTION_ERRORS`): the caller makes a new one. ``retry``
    replaces the automatic retries of the node client's commands."""
    if not isinstance(client, RedisCluster):
        return client
    await client.initialize()
    node = client.get_node_from_key(key)
    if node is None:  # pragma: no cover - only for replica=True
        raise RuntimeError(f"no node serves {key!r}")
    settings = dict(node.connection_kwargs)
    if retry is not None:
        settings["retry"] = retry
    pool = BlockingConnectionPool(
        connection_class=_following_failovers(node.connection_class),
        max_connections=DEFAULT_CLIENT_OPTIONS["max_connections"],
        timeout=DEFAULT_CLIENT_OPTIONS["timeout"],
        **settings,
    )
    return Redis.from_pool(pool)


class WaitingCluster(RedisCluster):
    """redis-py's cluster client, whose commands wait for a free connection instead of
    failing with ``MaxConnectionsError`` once ``max_connections`` are in use on a node
    (a one-server pool waits): at most that many commands are in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(int(self.connection_kwargs["max_connections"]))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._in_flight:
            return await super().execute_command(*args, **kwargs)


def cluster_client(deployment: Deployment, retry: Retry | None = None) -> Redis:
    """redis-py's cluster client, which finds every node from any of the listed ones.

    Typed as ``Redis`` for the code that shares it: it answers the same commands, but it
    has no single connection pool (``connection_pool``, ``client()``).
    """
    options: dict[str, Any] = {
        key: value
        for key, value in DEFAULT_CLIENT_OPTIONS.items()
        if key not in ("max_connections", "timeout")
    }
    options["max_connections"] = CLUSTER_MAX_CONNECTIONS
    options.update(deployment.options)
    client = WaitingCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in deployment.hosts],
        username=deployment.username,
        password=deployment.password,
        ssl=deployment.tls,
        retry=retry or _short_retry(),
        **options,
    )
    # Every node's connections are made from these settings (nodes found later too).
    nodes = client.nodes_manager
    own = _direct_sending(nodes.connection_kwargs["connection_class"])
    if _fast_encoding(nodes.connection_kwargs):
        own = _fast_packing(own)
    nodes.connection_kwargs["connection_class"] = own
    for node in nodes.startup_nodes.values():
        node.connection_class = own
    return cast(Redis, client)


class SentinelMaster(Redis):
    """The master's client; closing it closes its connections to the sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        owner = self.auto_close_connection_pool
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if (owner if close_connection_pool is None else close_connection_pool) and isinstance(
            pool, SentinelConnectionPool
        ):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


def sentinel_client(deployment: Deployment) -> Redis:
    """A client of the master of ``deployment.service``: each new connection asks the
    sentinels where the master is, so a failover is followed by reconnecting."""
    sentinel_options: dict[str, Any] = {
        key: value
        for key, value in DEFAULT_CLIENT_OPTIONS.items()
        if key not in ("max_connections", "timeout")
    }
    # Each sentinel is asked once per lookup (the next one is asked when it fails, and the
    # lookup itself is retried): redis-py's default would retry a refused one for 30 s.
    sentinel_options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=0)
    options = {**DEFAULT_CLIENT_OPTIONS, **deployment.options}
    if deployment.tls:
        sentinel_options["ssl"] = True
        sentinel_options.update((k, v) for k, v in options.items() if k.startswith("ssl_"))
    sentinel_options.update(deployment.sentinel_options)
    sentinels = Sentinel(list(deployment.hosts), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    pool = BlockingSentinelPool(
        deployment.service,
        sentinels,
        is_master=True,
        ssl=deployment.tls,
        db=deployment.db,
        username=deployment.username,
        password=deployment.password,
        retry=_short_retry(),
        **options,
    )
    asking = asking_the_sentinels(_direct_sending(pool.connection_class))
    pool.connection_class = _following_failovers(asking)
    if _fast_encoding(pool.connection_kwargs):
        pool.connection_class = _fast_packing(pool.connection_class)
    return SentinelMaster.from_pool(pool)


def private_client(
    client: Redis | RedisCluster, connections: int = 1, retry: Retry | None = None
) -> Redis:
    """A client for the same server, with the same settings, as ``client``, on a pool of
    its own of at most ``connections``: for work that must neither take ``client``'s
    connections nor wait behind its commands (health and metrics probes). On a cluster,
    whose client cannot make a command wait for a free connection, up to
    ``PRIVATE_CLUSTER_CONNECTIONS`` per node instead, so that a burst of probes is not
    refused. ``retry`` replaces the automatic retries of its commands."""
    if isinstance(client, RedisCluster):
        settings = client.connection_kwargs
        copied = Deployment(
            kind="cluster",
            tls=issubclass(settings["connection_class"], SSLConnection),
            hosts=tuple(
                (node.host, int(node.port)) for node in client.nodes_manager.startup_nodes.values()
            ),
            username=settings.get("username"),
            password=settings.get("password"),
            options={
                key: value
                for key, value in settings.items()
                if key in cluster_options() and key not in ("username", "password")
            },
        )
        copied.options["max_connections"] = max(connections, PRIVATE_CLUSTER_CONNECTIONS)
        return cluster_client(copied, retry)
    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    if retry is not None:
        settings["retry"] = retry
    own: ConnectionPool
    if isinstance(pool, SentinelConnectionPool):  # its own lookups of the master too
        own = BlockingSentinelPool(
            pool.service_name,
            pool.sentinel_manager,
            is_master=True,
            max_connections=connections,
            timeout=5,
            **settings,
        )
    else:
        own = BlockingConnectionPool(max_connections=connections, timeout=5, **settings)
    own.connection_class = pool.connection_class
    return Redis.from_pool(own)
