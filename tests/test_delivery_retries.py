"""A delivering command whose reply is lost with its connection.

XREADGROUP and XAUTOCLAIM deliver as they run: an automatic retry of one would deliver
again (or nothing) while the first delivery waits in the pending list until the
redelivery timeout. They are sent without retries; the worker takes its own pending
messages back at once instead. A proxy forwards the command, then drops the connection
before Redis's reply reaches the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from conftest import wait_for
from redis_server import RedisProcess, free_port
from shadows import Shadow, Worker
from shadows.core.keys import WORKER_GROUP

#: Far longer than the recovery may take: a message left for it would show.
REDELIVERY = timedelta(seconds=60)


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    with RedisProcess() as started:
        yield started


class LostReply:
    """A TCP proxy to Redis that, once armed with a command name, forwards the next such
    command and then closes the worker's connection without its reply."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.armed: bytes | None = None
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LostReply:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    @staticmethod
    def _names(command: bytes, data: bytes) -> bool:
        """Whether ``data`` holds ``command`` as a command name (not inside a key)."""
        return b"$%d\r\n%s\r\n" % (len(command), command) in data.upper()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        lost = asyncio.Event()
        for pump in (
            self._requests(reader, upstream_writer, writer, lost),
            self._replies(upstream_reader, writer, lost),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _requests(
        self,
        source: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        lost: asyncio.Event,
    ) -> None:
        try:
            while data := await source.read(65536):
                cutting = self.armed is not None and self._names(self.armed, data)
                if cutting:
                    self.armed = None
                    lost.set()  # before Redis can answer: no reply goes back
                upstream.write(data)
                await upstream.drain()
                if cutting:
                    self.cut += 1
                    client.close()
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            upstream.close()

    async def _replies(
        self, source: asyncio.StreamReader, client: asyncio.StreamWriter, lost: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65536):
                if lost.is_set():
                    return
                client.write(data)
                await client.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            client.close()


async def _run_once(
    server: RedisProcess, name: str, command: bytes
) -> tuple[list[float], dict[bytes, bytes], float, int]:
    """Starts a worker through the proxy armed for ``command``; returns the start times
    of the task, its run record while it ran, how long after the worker's start it ran,
    and how many connections the proxy cut."""
    started: list[float] = []
    proceed = asyncio.Event()

    async def deliver_me() -> None:
        started.append(time.monotonic())
        await proceed.wait()

    async with (
        LostReply(server.port) as proxy,
        Shadow(name=name, url=server.url) as direct,
        Shadow(name=name, url=f"redis://127.0.0.1:{proxy.port}/0") as proxied,
    ):
        direct.register(deliver_me)
        proxied.register(deliver_me)
        stream = direct.keys.stream
        await direct.client.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        await direct.add(deliver_me, key="once")()
        if command == b"XAUTOCLAIM":
            # delivered to a worker that died long ago
            [(_, [(message_id, _)])] = await direct.client.xreadgroup(
                WORKER_GROUP, "dead", {stream: ">"}, count=1
            )
            await direct.client.xclaim(
                stream, WORKER_GROUP, "dead", 0, [message_id], idle=10 * 60_000
            )
        proxy.armed = command
        worker = Worker(proxied, name="w", concurrency=2, redelivery_timeout=REDELIVERY)
        began = time.monotonic()
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: bool(started), 20, "the delivered message to run")
            record = await direct.client.hgetall(direct.keys.run("once"))
            proceed.set()
            await wait_for(lambda: _settled(direct), 20, "the message to be acknowledged")
        finally:
            worker.stop()
            await asyncio.gather(running, return_exceptions=True)
        return started, record, started[0] - began, proxy.cut


async def _settled(shadow: Shadow) -> bool:
    summary = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
    return int(summary["pending"]) == 0


@pytest.mark.parametrize("command", [b"XREADGROUP", b"XAUTOCLAIM"])
async def test_a_delivery_whose_reply_is_lost_runs_at_once_and_once(
    server: RedisProcess, command: bytes
) -> None:
    started, record, after, cut = await _run_once(server, f"lost-reply-{len(command)}", command)
    assert cut == 1
    assert len(started) == 1
    # at once, not after the redelivery timeout (60 s)
    assert after < 10, after
    assert record[b"deliveries"] == b"1"
