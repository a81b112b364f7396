"""Bugs the chaos suite found in shadows, each reproduced deterministically.

These tests FAIL until the bugs are fixed in ``src/`` (the chaos suite reports them; see
docs/reliability-chaos.md, "Findings"). Each sets up the exact moment the chaos run hit
by chance: Redis going away at one particular step of the worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from processes import spawn_worker
from redis_server import RedisProcess
from shadows import Perpetual, Shadow, Worker


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    with RedisProcess(persistent=True) as started:
        yield started


def outage(server: RedisProcess, seconds: float) -> None:
    """Stop Redis now and start it again ``seconds`` later (on the running loop)."""
    server.stop()
    asyncio.get_running_loop().call_later(seconds, server.start)


async def test_a_worker_rides_out_redis_going_away_between_reading_and_starting_a_batch(
    server: RedisProcess,
) -> None:
    """Chaos long run, seed 4242: worker w0-g11 exited with "Error: cannot reach Redis"
    0.6 s into a Redis restart. ``Worker._start`` runs the START script outside the read
    loop's reconnection handling, so a connection error there ends ``run_forever``."""
    ran: list[str] = []

    async def note(label: str) -> None:
        ran.append(label)

    async with Shadow(name="findings-start", url=server.url) as shadow:
        shadow.register(note)
        await shadow.add(note, key="k")("hello")
        original = shadow.scripts.start

        async def start_after_redis_left(**kwargs: Any) -> Any:
            shadow.scripts.start = original  # once
            outage(server, 1.0)  # Redis leaves right after the batch was read
            return await original(**kwargs)

        shadow.scripts.start = start_after_redis_left  # type: ignore[method-assign]
        worker = Worker(
            shadow,
            redelivery_timeout=timedelta(seconds=2),
            reconnection_delay=timedelta(milliseconds=200),
        )
        await asyncio.wait_for(worker.run_until_finished(), 30)
    assert ran == ["hello"]


async def test_a_worker_rides_out_redis_going_away_while_it_starts_automatic_tasks(
    server: RedisProcess,
) -> None:
    """Same class of bug at start-up: ``_schedule_automatic_tasks`` adds the automatic
    perpetual tasks outside any reconnection handling, so a worker that starts while
    Redis restarts may exit instead of waiting for it."""
    ran: list[str] = []

    async def tick(perpetual: Perpetual = Perpetual(every=timedelta(seconds=1), automatic=True)):  # type: ignore[no-untyped-def]
        ran.append("tick")
        perpetual.cancel()

    async with Shadow(name="findings-automatic", url=server.url) as shadow:
        shadow.register(tick)
        original = shadow.ensure_group

        async def ensure_group_then_redis_leaves() -> None:
            await original()
            outage(server, 1.0)

        shadow.ensure_group = ensure_group_then_redis_leaves  # type: ignore[method-assign]
        worker = Worker(shadow, reconnection_delay=timedelta(milliseconds=200))
        running = asyncio.create_task(worker.run_forever())
        try:
            await wait_for(lambda: ran == ["tick"] or running.done(), 20, "the automatic task")
            assert not running.done(), f"the worker exited: {running.exception()!r}"
        finally:
            worker.stop()
            await asyncio.gather(running, return_exceptions=True)


async def test_a_worker_does_not_report_its_own_acknowledgement_as_a_lost_claim(
    redis_url: str, shadow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Chaos long run, seed 4242: 16 "Cancelling task ...: another worker has claimed its
    message" errors, each 1-10 ms after the task completed and with no other run of it.
    A claim renewal sent while the task's acknowledgement is in flight finds the message
    acknowledged and takes that for a claim by another worker: a false ERROR, and a
    finished task cancelled. Here there is only one worker, so every such line is false."""

    async def quick() -> None:
        await asyncio.sleep(0.002)

    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        shadow.register(quick)
        worker = Worker(shadow, concurrency=20, redelivery_timeout=timedelta(milliseconds=200))
        with caplog.at_level(logging.ERROR, logger="shadows"):
            for _ in range(10):
                for _ in range(300):
                    await shadow.add(quick)()
                await worker.run_until_finished()
                if "another worker has claimed" in caplog.text:
                    break
        keys = [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")]
        if keys:
            await shadow.client.delete(*keys)
    false_claims = [r.getMessage() for r in caplog.records if "another worker" in r.getMessage()]
    assert false_claims == []


async def test_stopping_a_worker_while_redis_is_away_leaves_no_unretrieved_task_error(
    server: RedisProcess, tmp_path: Path
) -> None:
    """Chaos runs: "ERROR asyncio: Task exception was never retrieved" (an XREADGROUP
    future with a ConnectionError) in the log of a worker stopped while Redis is down. The
    blocking read's wake-up calls CLIENT UNBLOCK; when that fails, ``_blocking_read``
    raises without awaiting or cancelling the read it started."""
    for attempt in range(6):  # a race: it shows in most attempts, not in all
        log = tmp_path / f"worker-{attempt}.log"
        process = spawn_worker(
            server.url, "findings-unblock", "--minimum-check-interval", "5s",
            "--reconnection-delay", "200ms", log=log, tasks="shadows.tasks:standard_tasks",
        )  # fmt: skip
        try:
            await wait_for(lambda log=log: "started on" in log.read_text(), 30, "the worker")
            await asyncio.sleep(0.5)  # idle, blocked on the stream
            server.stop()
            await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            await wait_for(lambda p=process: p.poll() is not None, 30, "the worker to exit")
        finally:
            process.kill()
            server.start()
        assert process.returncode == 0
        assert "Task exception was never retrieved" not in log.read_text(), log.read_text()
