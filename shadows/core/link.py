"""A shadow's connection to Redis on one event loop: its client, scripts and lane.

A ``Shadow`` may be made at import time, before any loop runs, and used from several
loops in turn (each test of a suite runs in its own). redis-py clients and their
connections belong to the loop they were first used on, so a shadow keeps one link per
loop: the first use on a new loop opens a new link, and the old one is let go without
being awaited (its loop may be closed already). The ``memory://`` servers live in
:mod:`connection`, outside any link, so their data survives the change of loop.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import ConnectionPool, Redis

from shadows.core.connection import create_client, held_connections
from shadows.core.flow_scripts import FlowScripts
from shadows.core.lane import Lane
from shadows.core.layout import Layout
from shadows.core.scripts import Scripts
from shadows.core.state_scripts import StateScripts
from shadows.core.urls import single_pool


class Link:
    """The client, scripts and producer lane of one shadow on ``loop``."""

    __slots__ = ("client", "flow", "lane", "layout", "loop", "scripts", "state")

    def __init__(self, url: str, pool: ConnectionPool | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.client: Redis = create_client(url, pool)
        self.scripts = Scripts(self.client)
        self.flow = FlowScripts(self.client)
        self.state = StateScripts(self.client)
        self.lane: Lane | None = Lane(self.client) if single_pool(url) else None
        #: The shard counts in use, as this connection last read them.
        self.layout = Layout()

    async def close(self) -> None:
        lane, self.lane = self.lane, None
        if lane is not None:
            await lane.close()
        await self.client.aclose()

    def abandon(self, own_pool: bool) -> None:
        """Let go of a link whose loop is gone or not running: close its sockets without
        awaiting anything (nothing can be awaited on another loop)."""
        if not own_pool:
            return  # the caller's pool: theirs to close
        for connection in held_connections(self.client):
            writer = getattr(connection, "_writer", None)
            if writer is None:
                continue
            with contextlib.suppress(Exception):
                transport = writer.transport
                socket = transport.get_extra_info("socket")
                if socket is not None:
                    socket.close()
            connection._writer = connection._reader = None
