"""Shadows' pool for the master Redis Sentinel names (see :mod:`connection`).

redis-py asks the sentinels where the master is only when it makes a connection. A
planned failover (``SENTINEL FAILOVER``) promotes the replica at once but leaves the old
master a writable master until the sentinels demote it, about 10 s later, and whatever is
written to it meanwhile is discarded: connections made before the failover would go on
writing to it. These pools ask again while in use and leave the old master together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from shadows.core.mixins import mixed

#: Seconds between two asks of the sentinels, by a sentinel client in use, whether the
#: master has moved (a planned failover leaves the old master writable for seconds).
MASTER_CHECK_EVERY = 1.0


class _Sentinels:
    """What the pools asking the same sentinels share: the master they last named."""

    def __init__(self) -> None:
        self.master: Any = None
        self.pools: weakref.WeakSet[BlockingSentinelPool] = weakref.WeakSet()


_sentinels: weakref.WeakKeyDictionary[Any, _Sentinels] = weakref.WeakKeyDictionary()


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the master the sentinels name, waiting for a free one like the
    one-server pool.

    redis-py asks the sentinels only when a connection is made, so the connections made
    before a planned failover stay on the old master, which accepts writes (discarded
    once the sentinels demote it, about 10 s later). While in use, this pool asks again
    every :data:`MASTER_CHECK_EVERY` seconds (in the background, see
    :class:`AsksTheSentinels`); once any pool of the
    same sentinels (the shadow's client and its private clients: a worker's reader, the
    probes) sees the master move, every one leaves the old master, its connections in
    use included (their command fails as if the server had closed them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._checked = time.monotonic()
        self._check: asyncio.Task[None] | None = None
        self._group = _sentinels.setdefault(self.sentinel_manager, _Sentinels())
        self._group.pools.add(self)

    def check_due(self) -> None:
        """Ask the sentinels in the background if the last ask is old (called before
        every command its connections send)."""
        now = time.monotonic()
        if self._group.master is not None and now - self._checked >= MASTER_CHECK_EVERY:
            self._checked = now
            if self._check is None or self._check.done():
                self._check = asyncio.create_task(self._check_master())

    async def _check_master(self) -> None:
        with contextlib.suppress(Exception):  # the next command meets any outage
            await self.get_master_address()

    async def get_master_address(self) -> Any:
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        known, self._group.master = self._group.master, address
        if known is not None and address != known:
            for pool in list(self._group.pools):
                await pool._leave(known, address)
        return address

    async def _leave(self, old: Any, new: Any) -> None:
        """Close this pool's connections to ``old``, the master before ``new``: the idle
        ones reconnect when next used, the ones in use fail their command."""
        self.master_address = new
        idle: list[Any] = list(self._available_connections)
        for connection in [*idle, *self._in_use_connections]:
            if (connection.host, connection.port) != tuple(old):
                continue
            if connection in idle:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
            else:
                _cut(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        check = self._check
        if inuse_connections and check is not None and check is not asyncio.current_task():
            check.cancel()
        await super().disconnect(inuse_connections)


class AsksTheSentinels:
    """A master's connection that has its pool check where the master is (at most every
    :data:`MASTER_CHECK_EVERY` seconds, whichever way a command is sent: through the
    pool, a producer's lane or a reader's own connection), and that reconnects through
    the sentinels. redis-py reconnects a dropped connection, when it next sends a
    command, to the address it had (``send_packed_command`` calls
    ``connect_check_health``, not the Sentinel connection's ``connect``): a command
    retried after its connection was closed went back to the old master."""

    _asking = False

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        check_due = getattr(self.connection_pool, "check_due", None)  # type: ignore[attr-defined]
        if check_due is not None:
            check_due()
        await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self.is_connected or self._asking:  # type: ignore[attr-defined]
            await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
            return
        self._asking = True
        try:
            await self.connect()  # type: ignore[attr-defined]
        finally:
            self._asking = False


def asking_the_sentinels(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (a Sentinel connection) with :class:`AsksTheSentinels`."""
    return mixed(AsksTheSentinels, connection_class)


def _cut(connection: Any) -> None:
    """Shut ``connection``'s socket down: a command waiting on it, or the next one sent,
    fails as if the server had closed it (and its connection then reconnects)."""
    writer = getattr(connection, "_writer", None)
    link = writer.get_extra_info("socket") if writer is not None else None
    if link is not None:
        with contextlib.suppress(OSError):
            link.shutdown(socket.SHUT_RDWR)
