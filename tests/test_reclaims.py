"""Reclaims that find everything: the whole pending list is swept for dead workers'
messages, and poison protection counts deliveries in Redis (it survives a worker that
restarts under the same name)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conftest import wait_for
from shadows import Shadow, Worker
from shadows.core.keys import WORKER_GROUP


async def test_a_dead_workers_message_behind_many_live_ones_is_reclaimed(shadow: Shadow) -> None:
    """XAUTOCLAIM scans at most ten times its count per call: from ``0-0`` with one free
    slot, a dead worker's message behind 30 live long-running ones was never reached."""
    release = asyncio.Event()
    ran: list[str] = []

    async def long(label: str) -> None:
        ran.append(label)
        await release.wait()

    shadow.register(long)
    timeout = timedelta(milliseconds=600)
    for n in range(30):
        await shadow.add(long, key=f"live-{n}")(f"live-{n}")
    live = Worker(shadow, name="live", concurrency=30, redelivery_timeout=timeout)
    running_live = asyncio.create_task(live.run_forever())
    rescuer: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: len(ran) == 30, 20, "the live worker to run its 30 tasks")
        # A dead worker read the newest message and never acknowledged it.
        await shadow.add(long, key="orphan")("orphan")
        await shadow.client.xreadgroup(WORKER_GROUP, "dead", {shadow.keys.stream: ">"}, count=1)
        pending = await shadow.client.xpending(shadow.keys.stream, WORKER_GROUP)
        assert int(pending["pending"]) == 31
        worker = Worker(shadow, name="rescuer", concurrency=1, redelivery_timeout=timeout)
        rescuer = asyncio.create_task(worker.run_forever())
        await wait_for(lambda: "orphan" in ran, 15, "the dead worker's message to be reclaimed")
        assert worker.active_keys == ["orphan"]
    finally:
        release.set()
        live.stop()
        if rescuer is not None:
            worker.stop()
        await asyncio.gather(running_live, *([rescuer] if rescuer else []))
    assert sorted(ran) == sorted([f"live-{n}" for n in range(30)] + ["orphan"])
