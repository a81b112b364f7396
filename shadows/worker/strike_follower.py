"""A worker's strikes kept in step with Redis: :class:`StrikeFollower` loads the hash of
the strikes in effect, then blocks on the feed stream on a connection of its own and
loads the hash again on any strike entry (see :mod:`shadows.operations.strikes`). The
feed also carries revocations (cancelled running work), handed to the worker's
:class:`~shadows.worker.revocations.Revocations`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from shadows.core.cancellation import CancelGuard
from shadows.core.connection import connection_options, node_client
from shadows.core.reconnect import CONNECTION_ERRORS, Backoff, sleep_unless
from shadows.operations.strikes import StrikeList, decode_state, text_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from shadows.core.backend import Backend
    from shadows.worker.revocations import Revocations

logger = logging.getLogger("shadows.worker")


class StrikeFollower:
    """Keeps one worker's :class:`StrikeList` in step with Redis, through outages."""

    def __init__(
        self,
        shadow: Backend,
        strikes: StrikeList,
        reconnect_cap: float,
        revocations: Revocations | None = None,
    ) -> None:
        self.shadow = shadow
        self.strikes = strikes
        self.reconnect_cap = reconnect_cap
        #: Told of the feed's revocations (cancelled running work), and asked to check
        #: the durable ones after every reload (an outage may have hidden some).
        self.revocations = revocations
        self._last_id = "0-0"
        self._server: Redis | None = None  # the server holding the feed
        self._connection: Redis | None = None
        self._connection_id: int | None = None
        self._reading = False
        self._reported: set[str] = set()
        timeout = connection_options(shadow.client).get("socket_timeout")
        # A block must end well before the client's socket timeout would call it dead.
        self._block_ms = int(1000 * min(5.0, max(0.05, timeout / 2) if timeout else 5.0))

    async def load(self) -> None:
        """Read the whole state, and the feed position it corresponds to, in one step."""
        keys = self.shadow.keys
        last, flat = await self.shadow.scripts.strikes_snapshot(
            keys=[keys.strikes_in_effect, keys.strikes], args=[]
        )
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        strikes, broken = decode_state(raw, self.shadow.payloads)
        for text, unreadable in broken.items():
            if text not in self._reported:
                self._reported.add(text)
                logger.error(
                    "Ignoring the strike %s: this worker cannot read it (%s)",
                    unreadable,
                    unreadable.reason,
                )
        first = not self.strikes.loaded
        added, removed = self.strikes.replace(strikes)
        self._last_id = text_of(last)
        if first:
            if strikes:
                logger.warning(
                    "%d strike(s) in effect: %s",
                    len(strikes),
                    ", ".join(str(s) for s in strikes.values()),
                )
            return
        for strike in added:
            logger.warning("Strike in effect: %s", strike, extra={"strike": str(strike)})
        for strike in removed:
            logger.warning("Strike restored: %s", strike, extra={"strike": str(strike)})

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow the feed until cancelled or ``stopping``; reload the state on every change
        and after every outage (the feed may have been trimmed meanwhile)."""
        backoff = Backoff(self.reconnect_cap)
        stale = not self.strikes.loaded
        reported = False
        guard = CancelGuard()
        try:
            while not stopping.is_set():
                guard.check()
                try:
                    if stale:
                        await self.load()
                        if self.revocations is not None:
                            await self.revocations.check()
                        stale = False
                        if reported:
                            logger.info("Following strikes again")
                        reported = False
                    if await self._changed(stopping, guard):
                        await self.load()
                        if self.revocations is not None:
                            await self.revocations.check()
                    backoff.reset()
                except CONNECTION_ERRORS as error:
                    stale = True
                    await self._drop_connection()
                    delay = backoff.next()
                    if not reported:
                        logger.warning(
                            "Cannot follow strikes (%s); retrying in %.1f s", error, delay
                        )
                    reported = True
                    await sleep_unless(stopping, delay)
                except Exception:
                    # Not an outage: say so loudly, and keep trying rather than silently
                    # stop honouring strikes.
                    logger.exception("Following strikes failed; retrying")
                    stale = True
                    await self._drop_connection()
                    await sleep_unless(stopping, backoff.next())
        finally:
            if self._reading and self._connection_id is not None and self._server is not None:
                # Ends the server side of the abandoned read at once (the in-process
                # memory:// server would otherwise keep it until its timeout).
                with contextlib.suppress(Exception):
                    unblock = self._server.client_unblock(self._connection_id)
                    await asyncio.wait_for(unblock, 0.5)
            await self._drop_connection()

    async def _changed(self, stopping: asyncio.Event, guard: CancelGuard) -> bool:
        """Block on the feed (on this follower's own connection) for one block period."""
        if self._connection is None:
            self._server = await node_client(self.shadow.client, self.shadow.keys.strikes)
            self._connection = self._server.client()
            try:
                self._connection_id = await self._connection.client_id()
            except ResponseError:  # an ACL user without CLIENT: reads are simply abandoned
                self._connection_id = None
        # A stop or a cancel (which redis-py may have swallowed in the call above) that
        # came meanwhile must not wait out a whole block.
        guard.check()
        if stopping.is_set():
            return False
        self._reading = True
        response = await self._connection.xread(
            {self.shadow.keys.strikes: self._last_id}, count=100, block=self._block_ms
        )
        self._reading = False
        entries = feed_entries(response)
        if not entries:
            return False
        revoked = [text_of(f[b"key"]) for _, f in entries if f.get(b"action") == b"revoke"]
        if revoked and self.revocations is not None:
            self.revocations.revoke(revoked)
        if len(revoked) == len(entries):
            self._last_id = text_of(entries[-1][0])  # no strike changed: nothing to reload
            return False
        return True

    async def _drop_connection(self) -> None:
        # A read cancelled mid-flight may leave a reply on the socket: never reuse it. An
        # XREAD has no effect on the server, so abandoning one is harmless.
        client, self._connection = self._connection, None
        server, self._server = self._server, None
        self._connection_id, self._reading = None, False
        with contextlib.suppress(Exception):
            if client is not None and client.connection is not None:
                await client.connection.disconnect()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()
            if server is not None and server is not self.shadow.client:
                await server.aclose()


def feed_entries(response: Any) -> list[tuple[Any, dict[bytes, bytes]]]:
    """The (id, fields) entries of an XREAD reply (RESP2 list or RESP3 dict)."""
    if not response:
        return []
    batches = response.values() if isinstance(response, dict) else (b for _, b in response)
    entries: list[tuple[Any, dict[bytes, bytes]]] = []
    for batch in batches:
        items = batch[0] if isinstance(response, dict) else batch
        entries += [(entry_id, dict(fields or {})) for entry_id, fields in items]
    return entries
