"""Reclaims that find everything: the whole pending list is swept for dead workers'
messages, and poison protection counts deliveries in Redis (it survives a worker that
restarts under the same name)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from processes import spawn_worker
from redis_server import RedisProcess
from shadows import ConcurrencyLimit, Shadow, Worker
from shadows.core.keys import WORKER_GROUP
from worker_tasks import kill_my_worker, read_records, record_and_sleep


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


async def test_a_task_that_kills_its_worker_is_dead_lettered_across_restarts_under_one_name(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    """A worker restarted under the same name (a container keeps its hostname and PID 1)
    takes its own pending messages back without Redis counting a delivery: a task that
    kills its worker ran again at every restart, for ever. The deliveries are counted in
    the run record, once per run of a worker, and checked when a message starts."""
    if url.startswith("memory://"):
        pytest.skip("worker processes need a server they can reach")
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=url) as shadow:
        # a neighbour running when the task kills the worker: taken back with it
        await shadow.add(record_and_sleep, key="neighbour")(str(runs), "neighbour", 1.0)
        await shadow.add(kill_my_worker, key="deadly")(str(runs), "deadly")
        for restart in range(6):
            # 1 s heartbeats: a restart waits up to 3 s, not 6 s, for the dead one's entry
            worker = spawn_worker(
                url, shadow_name, "--name", "same", "--max-deliveries", "2",
                "--heartbeat-interval", "1s", log=tmp_path / "worker.log",
            )  # fmt: skip
            try:

                async def settled(worker: subprocess.Popen[bytes] = worker) -> bool:
                    if worker.poll() is not None:
                        return True
                    dead = await shadow.failed_task("deadly") is not None
                    return dead and await shadow.task_state("neighbour") == "completed"

                await wait_for(settled, 30, f"run {restart + 1} to end its worker")
            finally:
                worker.terminate()
                worker.wait(30)
            if await shadow.failed_task("deadly") is not None:
                break
        letter = await shadow.failed_task("deadly")
        record = await shadow.client.hgetall(shadow.keys.run("deadly"))
        await_state = await shadow.task_state("neighbour")
    records = read_records(runs)
    log = (tmp_path / "worker.log").read_text()
    starts = [r for r in records if r[:2] == ["start", "deadly"]]
    assert len(starts) == 2, f"{len(starts)} runs; worker log:\n{log}"
    # the neighbour ran again alone (not taken down with it again), and finished
    assert ["end", "neighbour"] in [r[:2] for r in records], log
    assert await_state == "completed"
    assert letter is not None and letter.reason == "poison"
    assert "delivered 3 times" in letter.error
    assert record[b"deliveries"] == b"3"


async def test_a_task_that_kills_an_idle_worker_at_once_is_counted_from_its_first_run(
    url: str, shadow_name: str, tmp_path: Path
) -> None:
    """A task delivered by an idle worker's blocking read, which kills the worker before
    it can do anything else, has had its delivery counted: START comes before every run,
    so ``--max-deliveries 2`` means two runs, not three."""
    if url.startswith("memory://"):
        pytest.skip("worker processes need a server they can reach")
    runs = tmp_path / "runs"
    log = tmp_path / "worker.log"
    async with Shadow(name=shadow_name, url=url) as shadow:

        async def blocked_reads() -> int:
            clients = await shadow.client.client_list()
            return sum(1 for c in clients if c["cmd"] == "xreadgroup" and "b" in c["flags"])

        already = await blocked_reads()
        args = ("--name", "same", "--max-deliveries", "2", "--heartbeat-interval", "1s")
        worker = spawn_worker(url, shadow_name, *args, log=log)
        try:
            # a first task: the worker has started a batch (START is in the server's
            # script cache, so the next one is sent ahead of its task, not awaited)
            await shadow.add(record_and_sleep, key="first")(str(runs), "first", 0)

            async def first_done() -> bool:
                return await shadow.task_state("first") == "completed"

            await wait_for(first_done, 30, "a first run")
            # the worker is idle, waiting in its blocking read, when the task arrives
            await wait_for(lambda: _more(blocked_reads, already), 30, "the worker to block")
            await shadow.add(kill_my_worker, key="deadly")(str(runs), "deadly")
            assert worker.wait(30) == 137
            for restart in range(4):
                worker = spawn_worker(url, shadow_name, *args, log=log)

                async def settled(worker: subprocess.Popen[bytes] = worker) -> bool:
                    return worker.poll() is not None or (
                        await shadow.failed_task("deadly") is not None
                    )

                await wait_for(settled, 30, f"restart {restart + 1} to settle")
                if await shadow.failed_task("deadly") is not None:
                    break
        finally:
            worker.terminate()
            worker.wait(30)
        letter = await shadow.failed_task("deadly")
    starts = [r for r in read_records(runs) if r[:2] == ["start", "deadly"]]
    assert len(starts) == 2, f"{len(starts)} runs; worker log:\n{log.read_text()}"
    assert letter is not None and letter.reason == "poison"


async def _more(count: Callable[[], Awaitable[int]], than: int) -> bool:
    return await count() > than


async def test_a_message_parked_for_a_concurrency_slot_is_not_counted_as_a_delivery(
    shadow: Shadow,
) -> None:
    """A message parked because its pool is full did not run: handing it back takes its
    delivery off again, however many workers park it (with ``max_deliveries=1``, a park on
    one worker and the run on another would otherwise make it poison)."""
    release = asyncio.Event()
    ran: list[str] = []

    async def one_at_a_time(
        label: str, limit: ConcurrencyLimit = ConcurrencyLimit("label", max_concurrent=1)
    ) -> None:
        ran.append(label)
        if label == "first":
            await release.wait()

    shadow.register(one_at_a_time)
    await shadow.add(one_at_a_time, key="first")("first")
    w1 = Worker(shadow, name="w1", concurrency=1, max_deliveries=1)
    running_1 = asyncio.create_task(w1.run_forever())
    await wait_for(lambda: ran == ["first"], 10, "the first run")
    # the second call waits: w2 takes it and parks it while the first holds the slot
    await shadow.add(one_at_a_time, key="second")("first")
    w2 = Worker(shadow, name="w2", max_deliveries=1)
    running_2 = asyncio.create_task(w2.run_forever())

    async def parked() -> bool:
        return await shadow.task_state("second") == "scheduled"

    await wait_for(parked, 10, "the second call to be parked")
    w2.stop()
    await running_2
    record = await shadow.client.hgetall(shadow.keys.run("second"))
    assert record.get(b"deliveries", b"0") == b"0"
    release.set()  # the slot frees: w1 runs the second call (its first run)
    try:

        async def settled() -> bool:
            return await shadow.task_state("second") in ("completed", "failed")

        await wait_for(settled, 10, "the second call to end")
    finally:
        w1.stop()
        await running_1
    assert await shadow.failed_task("second") is None
    assert ran == ["first", "first"]
    assert await shadow.task_state("second") == "completed"


async def test_a_task_given_up_by_fencing_is_handed_back_with_its_delivery_taken_off(
    tmp_path: Path,
) -> None:
    """A task cancelled by fencing (Redis stalled) is not a death: if its worker then
    died before running it again, the delivery would count as one that killed it. The
    worker hands such a message back (RELEASE, which takes the delivery off) instead of
    taking it back from its pending list."""
    starts: list[str] = []

    async def steady() -> None:
        starts.append("start")
        await asyncio.sleep(1.5)

    with RedisProcess() as server:
        async with Shadow(name="reclaims-fenced", url=server.url) as shadow:
            shadow.register(steady)
            await shadow.add(steady, key="steady")()
            worker = Worker(shadow, name="stalled", redelivery_timeout=timedelta(seconds=1))
            running = asyncio.create_task(worker.run_forever())
            try:
                await wait_for(lambda: len(starts) == 1, 10, "the first run")
                first = await shadow.client.hget(shadow.keys.run("steady"), "message")
                server.pause()  # past the fencing limit: the task is cancelled
                await asyncio.sleep(1.3)
                server.resume()
                await wait_for(lambda: len(starts) == 2, 10, "the run after the stall")
                record = await shadow.client.hgetall(shadow.keys.run("steady"))
            finally:
                server.resume()
                worker.stop(force=True)
                await asyncio.gather(running, return_exceptions=True)
    assert record[b"message"] != first  # handed back under a new id, read again
    assert record[b"deliveries"] == b"1"  # the fenced delivery was taken off
