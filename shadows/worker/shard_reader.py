"""Reading one shard's stream for one consumer (see :mod:`reader` for the order of the
sources and the fair rotation over the shards).

The blocking read runs on a dedicated connection so that it can be woken with
``CLIENT UNBLOCK`` instead of being cancelled: a cancelled read may still be served by the
server and leave a message stranded in this consumer's pending list. On a cluster that
connection goes to the node of this shard's stream.

The commands that deliver (XREADGROUP, XAUTOCLAIM, the takeover's claim) go over a client
without automatic retries: a retried one would deliver again while the first delivery,
its reply lost with the connection, stays in the pending list until the redelivery
timeout. A connection error sets :attr:`ShardReader.recover` instead, and the next read
takes this consumer's pending messages back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Collection, Mapping
from datetime import timedelta
from typing import Any, TypeGuard

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

from shadows.core.backend import Backend
from shadows.core.connection import delivering_client, no_retry, node_client
from shadows.core.keys import WORKER_GROUP
from shadows.core.message import ref_of
from shadows.core.reconnect import CONNECTION_ERRORS
from shadows.worker.takeover import Takeover, forget_consumer

logger = logging.getLogger("shadows.worker")

Entry = tuple[bytes | str, Mapping[bytes, bytes] | None]

#: Where a batch of entries comes from, which decides what START does before they run:
#: FRESH, delivered just now by a read (START counts their delivery and records them
#: running); HELD for a while (this consumer's pending list, reclaimed from a dead worker,
#: or a reply that came late): START also confirms their claim and restarts its clock.
#: Either way START comes first: a task that takes its worker down at once has had its
#: delivery counted, so it is dead-lettered after ``max_deliveries`` runs, not one more.
FRESH, HELD = "fresh", "held"

#: XAUTOCLAIM calls one look for dead workers' messages may make (each looks at up to
#: ten times the free slots of pending entries) before the read of new work.
CLAIM_CALLS = 10

#: How often (seconds) a worker looks for consumers of dead workers to forget.
PRUNE_EVERY = 600.0


def entry_id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entries_by_stream(response: Any) -> dict[str, list[Entry]]:
    """The (id, fields) pairs of an XREADGROUP reply, by stream name."""
    if not response:
        return {}
    if isinstance(response, dict):
        return {entry_id(name): batch[0] for name, batch in response.items()}
    return {entry_id(name): batch for name, batch in response}


def entries_of(response: Any) -> list[Entry]:
    """The (id, fields) pairs of an XREADGROUP reply (RESP2 list or RESP3 dict)."""
    if not response:
        return []
    if isinstance(response, dict):
        return [entry for batch in response.values() for entry in batch[0]]
    return [entry for _, batch in response for entry in batch]


def raw_entries(reply: Any) -> list[Entry]:
    """The (id, fields) pairs of an XREADGROUP reply as the connection reads it (no
    response callback: RESP2 list or RESP3 map of streams, fields as flat lists)."""
    if not reply:
        return []
    batches = reply.values() if isinstance(reply, dict) else (batch for _, batch in reply)
    return [(entry, _pairs(fields)) for batch in batches for entry, fields in batch]


def _pairs(fields: list[bytes] | None) -> dict[bytes, bytes] | None:
    return None if fields is None else dict(zip(fields[::2], fields[1::2], strict=True))


class ShardReader:
    """Reads messages of one shard for one consumer (``shadow`` has that shard's keys)."""

    def __init__(
        self,
        shadow: Backend,
        consumer: str,
        redelivery_timeout: timedelta,
        block: float,
        claim_every: float,
    ) -> None:
        self.shadow = shadow
        self.shard = shadow.keys.shard
        self.consumer = consumer
        self.redelivery_timeout = redelivery_timeout
        self.block_ms = max(1, int(block * 1000))
        self.claim_every = claim_every
        self.recover = True
        self._last_claim = 0.0
        #: Where the sweep of the pending list for dead workers' messages goes on.
        self._cursor = "0-0"
        self._sweeping = False
        self._last_prune = time.monotonic()
        #: When the last read of new messages was sent (their claim clock started then).
        self.sent_at = 0.0
        #: A consumer idle this long (seconds) with nothing pending belongs to a dead worker.
        self.prune_after = max(3600.0, 10 * redelivery_timeout.total_seconds())
        #: The server of the stream (the shadow's client, or on a cluster a client of the
        #: stream's node) and the connection of its own the blocking read runs on.
        self._server: Redis | None = None
        self._connection: Redis | None = None
        #: The client without automatic retries the delivering commands go over.
        self._delivering: Redis | None = None
        self._can_unblock = True
        #: The server's id of the blocking-read connection (for CLIENT UNBLOCK), asked
        #: once per connection rather than before every read.
        self._client_id: int | None = None
        #: Whether the stream's server has START in its script cache (loaded by the
        #: first awaited call): a START sent ahead of its tasks must not meet NOSCRIPT.
        self._start_loaded = False

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        server, self._server = self._server, None
        delivering, self._delivering = self._delivering, None
        self._client_id = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.aclose()
        for client in {id(c): c for c in (server, delivering) if c is not None}.values():
            if client is not self.shadow.client:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def delivering(self) -> Redis:
        """The client the delivering commands go over (see the module's docstring)."""
        if self._delivering is None:
            self._delivering = delivering_client(self.shadow.client)
        return self._delivering

    async def take_over(self, takeover: Takeover, free: int) -> list[Entry]:
        """Messages of this shard held by workers whose heartbeat lapsed."""
        taken = await takeover.claim(free, self.delivering(), self.shadow)
        if taken:
            logger.warning("Took over %d message(s) of workers whose heartbeat lapsed", len(taken))
        # START counts their deliveries (shadows.core.deliveries)
        return [entry for entry, _ in taken]

    async def reclaim(self, free: int) -> list[Entry]:
        """Messages dead workers left unacknowledged too long, when a look is due."""
        now = time.monotonic()
        if not (self._sweeping or now - self._last_claim >= self.claim_every):
            return []
        if not self._sweeping:
            self._last_claim = now
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            await self._prune_consumers()
        entries = await self._claim(free)
        if entries:
            logger.warning(
                "Reclaimed %d message(s) left unacknowledged for over %s by dead workers",
                len(entries),
                self.redelivery_timeout,
            )
        return entries

    async def read_now(self, free: int) -> list[Entry]:
        """New work without blocking (the busy path: recorded as running by START, with
        the run keys declared, which a cluster requires, before it runs)."""
        self.sent_at = time.monotonic()
        connection = await self._own_connection()
        link = connection.connection
        stream = self.shadow.keys.stream
        try:
            if not _on_a_socket(link):  # not connected yet, or memory://
                return entries_of(
                    await connection.xreadgroup(WORKER_GROUP, self.consumer, {stream: ">"}, free)
                )
            # Straight over the connection, which only the read loop uses: redis-py's
            # command machinery costs about as much CPU as the rest of the read (148-158
            # against 191-196 µs per read of ten entries).
            command = ("XREADGROUP", "GROUP", WORKER_GROUP, self.consumer, "COUNT", free)
            await _send(link, *command, "STREAMS", stream, ">")
            return raw_entries(await link.read_response())
        except CONNECTION_ERRORS:
            await self._forget_server()
            raise

    async def start(self, keys: list[str], args: list[str | int]) -> Any:
        """START for messages this reader delivered, before they run, over the reader's
        own connection like the read (no automatic retry: an outage makes the worker
        take its pending messages back, through START again)."""
        connection = await self._own_connection()
        try:
            return await self.shadow.scripts.start(keys=keys, args=args, client=connection)
        except CONNECTION_ERRORS:
            await self._forget_server()
            raise

    async def send_start(self, keys: list[str], args: list[str | int]) -> Awaitable[Any]:
        """Send START for messages just read and return once its bytes are with the
        kernel, before its reply: a task started next that takes its worker down at once
        has had its delivery counted all the same (a socket closed by a dying process
        still delivers what was written to it), without waiting for a round trip. The
        returned awaitable reads the reply. Only the read loop uses this connection, so
        nothing else can come between the command and its reply."""
        connection = await self._own_connection()
        link = connection.connection
        if not (self._start_loaded and _on_a_socket(link)):
            reply = await self.start(keys, args)  # loads the script where it is missing
            self._start_loaded = True
            return _ready(reply)
        try:
            await _send(link, "EVALSHA", self.shadow.scripts.start.sha, len(keys), *keys, *args)
        except CONNECTION_ERRORS:
            await self._forget_server()
            raise
        return self._start_reply(link, keys, args)

    async def _start_reply(
        self, link: AbstractConnection, keys: list[str], args: list[str | int]
    ) -> Any:
        try:
            return await link.read_response()
        except CONNECTION_ERRORS:
            await self._forget_server()
            raise
        except NoScriptError:
            # the script cache was emptied (SCRIPT FLUSH): this call ran nothing
            return await self.start(keys, args)

    async def _own_connection(self) -> Redis:
        """The reader's own connection, to the stream's server, without automatic
        retries: the blocking read's, and the busy path's read and START, which thus
        take no connection from a pool (a checkout costs about as much CPU as the rest of
        a short command)."""
        if self._connection is None:
            # On a cluster, a client of the stream's node: CLIENT UNBLOCK must reach the
            # server the read blocks on (a cluster client has no client() either).
            self._server = await node_client(self.delivering(), self.shadow.keys.stream, no_retry())
            self._connection = self._server.client()
        return self._connection

    async def _forget_server(self) -> None:
        """After an outage: the connection may come back as another client, and on a
        cluster (a failover, a migration) the next call asks again for the stream's
        server."""
        self._client_id = None
        self._start_loaded = False  # a restarted or promoted server has no scripts yet
        if self._server is not None and self._server is not self.shadow.client:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.close())

    async def _claim(self, free: int) -> list[Entry]:
        """Up to ``free`` messages idle for longer than the redelivery timeout.

        XAUTOCLAIM looks at no more than ten times its count of pending entries per call,
        so the cursor is kept between calls: a sweep goes on where the last call stopped
        (live workers' long tasks ahead of a dead worker's message cannot hide it) and
        starts again from ``0-0`` once it has covered the whole pending list. An unfinished
        sweep goes on at the next read rather than after ``claim_every``.
        """
        client = self.delivering()
        for _ in range(CLAIM_CALLS):
            cursor, claimed = (
                await client.xautoclaim(
                    self.shadow.keys.stream,
                    WORKER_GROUP,
                    self.consumer,
                    min_idle_time=int(self.redelivery_timeout.total_seconds() * 1000),
                    start_id=self._cursor,
                    count=free,
                )
            )[:2]
            self._cursor = entry_id(cursor)
            self._sweeping = self._cursor != "0-0"
            if claimed or not self._sweeping:
                return list(claimed)
        return []

    async def own_pending(self, free: int, skip: Collection[str]) -> list[Entry]:
        """Messages in this consumer's pending list that it is not running (``skip``:
        the refs of the running ones, see :attr:`Message.ref`).

        Read with XPENDING and XRANGE rather than XREADGROUP from 0, which would count
        one more delivery each time (and make a healthy worker's long task look like
        poison after a few reconnections). The worker's START script then confirms the
        claim atomically before running them.
        """
        client = self.shadow.client
        stream = self.shadow.keys.stream
        pending = await client.xpending_range(
            stream,
            WORKER_GROUP,
            min="-",
            max="+",
            count=free + len(skip),
            consumername=self.consumer,
        )
        ids = [entry_id(entry["message_id"]) for entry in pending]  # type: ignore[arg-type]
        ids = [i for i in ids if ref_of(self.shard, i) not in skip][: free + 1]
        if not ids:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.xrange(stream, message_id, message_id)
            found = await pipe.execute()
        entries: list[Entry] = []
        for message_id, rows in zip(ids, found, strict=True):
            # an entry deleted while pending has no fields: the worker acknowledges it
            entries.append(rows[0] if rows else (message_id, None))
        return entries

    async def _prune_consumers(self) -> None:
        """Forget consumers of dead workers that hold nothing (the group would grow with
        every short-lived worker name otherwise)."""
        client = self.shadow.client
        stream = self.shadow.keys.stream
        quiet = self.prune_after * 1000
        for consumer in await client.xinfo_consumers(stream, WORKER_GROUP):
            name = entry_id(consumer["name"])
            idle = consumer["pending"] == 0 and consumer["idle"] > quiet
            # It may have received a message since XINFO: the script checks again.
            if name != self.consumer and idle and await forget_consumer(self.shadow, name):
                logger.info("Forgot the idle consumer %s (no pending messages)", name)

    async def blocking_read(self, free: int, wake: asyncio.Event) -> list[Entry]:
        """New work, blocking until some comes, the block times out or ``wake`` is set."""
        return entries_of(await self.blocking_read_of([self.shadow.keys.stream], free, wake))

    async def blocking_read_of(self, streams: list[str], free: int, wake: asyncio.Event) -> Any:
        """The reply of one blocking read of ``streams`` (on one server: this shard's and
        other shards' streams in one command), on this reader's own connection."""
        self.sent_at = time.monotonic()
        connection = await self._own_connection()
        client_id = await self._id_of(connection) if self._can_unblock else None
        reading = asyncio.ensure_future(
            connection.xreadgroup(
                WORKER_GROUP,
                self.consumer,
                dict.fromkeys(streams, ">"),
                count=free,
                block=self.block_ms,
            )
        )
        waking = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({reading, waking}, return_when=asyncio.FIRST_COMPLETED)
            while not reading.done() and client_id is not None:
                if not await self._unblock(client_id):
                    break
                await asyncio.wait({reading}, timeout=0.01)
            return await reading
        except BaseException:
            # Cancelled, or Redis went away while waking the read: end the read too, and
            # look at this consumer's pending list next time (it may have been served).
            if client_id is not None and not reading.done():
                with contextlib.suppress(Exception):
                    await self._unblock(client_id)
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
            self.recover = True
            await self._forget_server()
            raise
        finally:
            waking.cancel()

    async def _id_of(self, connection: Redis) -> int:
        if self._client_id is None:
            self._client_id = await connection.client_id()
            link = connection.connection
            if link is not None and hasattr(link, "register_connect_callback"):
                link.register_connect_callback(self._forget_client_id)  # type: ignore[no-untyped-call]
        return self._client_id

    def _forget_client_id(self, _: object) -> None:
        """A reconnection (redis-py may make one on its own): the id changed."""
        self._client_id = None

    async def _unblock(self, client_id: int) -> bool:
        try:
            await (self._server or self.shadow.client).client_unblock(client_id)
        except ResponseError as error:
            # An ACL user without CLIENT UNBLOCK: wait out the block instead.
            logger.info("Cannot use CLIENT UNBLOCK (%s); idle reads end on their timeout", error)
            self._can_unblock = False
            return False
        return True


async def _ready(value: Any) -> Any:
    return value


async def _send(link: AbstractConnection, *command: str | int) -> None:
    """Write ``command`` on ``link``; its reply is read with ``link.read_response()``."""
    await link.send_packed_command(link.pack_command(*command), check_health=False)


def _on_a_socket(link: AbstractConnection | None) -> TypeGuard[AbstractConnection]:
    """Whether ``link`` writes to a socket (memory://'s in-process server has none)."""
    return isinstance(link, AbstractConnection) and not type(link).__module__.startswith(
        "fakeredis"
    )
