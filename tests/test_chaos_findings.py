"""Bugs the chaos suite found in shadows, each reproduced on purpose.

Each test failed while its bug was in ``shadows/`` (see docs/reliability-chaos.md, "Findings")
and passes since the fix. Each sets up the moment a chaos run hit by chance: Redis going
away at one particular step of a worker, a reply held back past the redelivery timeout, a
claim renewal racing an acknowledgement, reconnections or stalls during a long task.
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
from redis_server import RedisProcess, free_port
from shadows import CurrentWorker, Perpetual, Shadow, Worker
from worker_tasks import read_records, record_and_sleep


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

    async def tick(
        perpetual: Perpetual = Perpetual(every=timedelta(seconds=1), automatic=True),
    ) -> None:
        ran.append("tick")
        perpetual.cancel()

    async with Shadow(name="findings-automatic", url=server.url) as shadow:
        shadow.register(tick)
        original = shadow.schedule_message

        async def schedule_after_redis_left(*args: Any, **kwargs: Any) -> Any:
            shadow.schedule_message = original  # type: ignore[method-assign]
            outage(server, 1.0)  # once: the worker's first add at start-up
            return await original(*args, **kwargs)

        shadow.schedule_message = schedule_after_redis_left  # type: ignore[method-assign]
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
        # claims renewed every 25 ms, so that renewals often meet acknowledgements in flight
        worker = Worker(shadow, concurrency=20, redelivery_timeout=timedelta(milliseconds=100))
        with caplog.at_level(logging.ERROR, logger="shadows"):
            for _ in range(30):  # a race: stop at the first false claim
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
    for attempt in range(4):  # a race: it showed in most attempts, not in all
        log = tmp_path / f"worker-{attempt}.log"
        process = spawn_worker(
            server.url, "findings-unblock", "--minimum-check-interval", "5s",
            "--reconnection-delay", "200ms", log=log, tasks="shadows.tasks:standard_tasks",
        )  # fmt: skip
        try:
            await wait_for(lambda log=log: "started on" in log.read_text(), 30, "the worker")
            await wait_until_a_worker_blocks(server.url)
            server.stop()
            await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            await wait_for(lambda p=process: p.poll() is not None, 30, "the worker to exit")
        finally:
            process.kill()
            server.start()
        assert process.returncode == 0
        assert "Task exception was never retrieved" not in log.read_text(), log.read_text()


async def wait_until_a_worker_blocks(url: str) -> None:
    """Wait until Redis shows a client blocked in XREADGROUP (an idle worker's read)."""
    async with Shadow(name="findings-observer", url=url) as observer:

        async def blocked() -> bool:
            clients = await observer.client.client_list()
            return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

        await wait_for(blocked, 30, "a worker blocked on the stream")


class HeldReplies:
    """A TCP proxy to Redis that can hold back Redis's replies (requests still go through):
    a worker's command is executed, but the worker hears of it only later, as when Redis
    stalls (or is paused) right after executing it."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> HeldReplies:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        for pump in (
            self._pump(reader, upstream_writer, held=False),
            self._pump(upstream_reader, writer, held=True),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, held: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if held:
                    await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()


async def test_a_message_reclaimed_while_its_delivery_was_in_flight_does_not_run_twice(
    server: RedisProcess,
) -> None:
    """Chaos short run, seed 41 (after the rebase on main of 2026-11-28): overlapping runs
    of one message on w0 and w2, both started 13 ms after a 2.09 s pause of Redis. Redis
    had delivered the message to w0 (XREADGROUP) just before it was paused, but w0 read
    the reply only after the pause; meanwhile the message's idle time passed the
    redelivery timeout, so w2 reclaimed it (XAUTOCLAIM) and both ran it.

    A worker starts its claim clock when the reply *arrives* (``Worker._start``), while
    Redis starts it at delivery, and nothing checks the claim before the task starts: a
    reply delayed by more than ~30% of the redelivery timeout breaks fencing. Here a proxy
    holds back Redis's replies to worker A for longer than the timeout."""
    runs: list[tuple[str, float, float]] = []

    async def slow(worker: Worker = CurrentWorker()) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(2.0)
        finally:
            runs.append((worker.name, started, asyncio.get_running_loop().time()))

    timeout = timedelta(seconds=1)
    async with HeldReplies(server.port) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        async with (
            Shadow(name="findings-held", url=server.url) as direct,
            Shadow(name="findings-held", url=proxied) as through_proxy,
        ):
            direct.register(slow)
            through_proxy.register(slow)
            worker_a = Worker(through_proxy, name="a", concurrency=1, redelivery_timeout=timeout)
            worker_b = Worker(direct, name="b", concurrency=1, redelivery_timeout=timeout)
            running_a = asyncio.create_task(worker_a.run_forever())
            await wait_until_a_worker_blocks(server.url)  # A, idle
            proxy.hold()
            await direct.add(slow, key="once")()

            async def delivered_to_a() -> bool:
                pending = await direct.client.xpending(direct.keys.stream, "shadows-workers")
                return int(pending["pending"]) == 1

            await wait_for(delivered_to_a, 10, "the delivery to A")
            running_b = asyncio.create_task(worker_b.run_forever())
            await wait_for(lambda: bool(worker_b.active_keys), 10, "B to reclaim the message")
            proxy.release()  # A hears of its delivery now
            # A would start its copy at once (13 ms after the pause, in the chaos run), so
            # by the end of B's 2 s run it would be running: stopping lets it finish first
            await wait_for(lambda: any(run[0] == "b" for run in runs), 10, "B's run to end")
            worker_a.stop()
            worker_b.stop()
            await asyncio.gather(running_a, running_b, return_exceptions=True)
    overlapping = [
        (first, second)
        for first in runs
        for second in runs
        if first[0] < second[0] and first[1] < second[2] and second[1] < first[2]
    ]
    assert overlapping == [], f"runs of the same message at the same time: {runs}"


async def test_reconnections_of_a_healthy_worker_do_not_make_its_task_poison(
    tmp_path: Path,
) -> None:
    """Chaos short runs, seeds 41 and 42 (after the rebase on main of 2026-11-28): 2 lost
    tasks each, dead-lettered as "poison: delivered 6 times without being acknowledged".
    The delivery count that ``max_deliveries`` (5) checks also grows with every own-pending
    recovery read (XREADGROUP from 0 after a reconnection), not only with redeliveries
    after a crash. Here a worker rides out a few short Redis restarts while running a long
    task (one delivery; the count reaches 5), is then killed once, and the next worker
    dead-letters the task instead of running it."""
    runs = tmp_path / "runs"
    with RedisProcess(persistent=True) as server:
        async with Shadow(name="findings-poison", url=server.url) as shadow:
            await shadow.add(record_and_sleep, key="long")(str(runs), "long", 30.0)
            # 1 s heartbeats: once it is killed, its task is taken over after 3 s, not 6 s
            first = spawn_worker(
                server.url, "findings-poison", "--redelivery-timeout", "6s",
                "--reconnection-delay", "200ms", "--heartbeat-interval", "1s",
                log=tmp_path / "first.log",
            )  # fmt: skip
            try:
                await wait_for(lambda: len(read_records(runs)) == 1, 30, "the first run")
                # short outages: the worker reconnects after each (with the old bug, each
                # reconnection counted a delivery: 4 of them make 5, then the loop ends)
                for _ in range(5):
                    server.stop()
                    await asyncio.sleep(0.6)
                    server.start()
                    await asyncio.sleep(0.6)
                    pending = await shadow.client.xpending_range(
                        shadow.keys.stream, "shadows-workers", min="-", max="+", count=1
                    )
                    if pending[0]["times_delivered"] >= 5:  # the next claim makes it 6
                        break
                assert [r[0] for r in read_records(runs)] == ["start"]  # one delivery ran
                first.kill()  # the worker dies once
                first.wait(10)
            finally:
                first.kill()
            second = Worker(
                shadow,
                redelivery_timeout=timedelta(seconds=6),
                heartbeat_interval=timedelta(seconds=1),
            )
            running = asyncio.create_task(second.run_forever())

            async def settled() -> bool:
                again = len([r for r in read_records(runs) if r[0] == "start"]) == 2
                return again or bool(await shadow.client.zcard(shadow.keys.failed))

            try:
                await wait_for(settled, 30, "the task to run again (or be dead-lettered)")
            finally:
                second.stop(force=True)
                await asyncio.gather(running, return_exceptions=True)
            letters = await shadow.client.zrange(shadow.keys.failed, 0, -1)
        assert letters == [], "a task whose worker died once was dead-lettered as poison"
        assert len([r for r in read_records(runs) if r[0] == "start"]) == 2


async def test_redis_stalls_alone_do_not_make_a_task_poison(server: RedisProcess) -> None:
    """Chaos long run, seed 2468 (main at ade9caf): 1 lost task, dead-lettered as "poison:
    delivered 6 times": three of its six runs were fenced during Redis outages (their
    workers alive and well), three were cut by SIGKILL. A delivery that its worker gave up
    by fencing counts towards ``max_deliveries`` like one whose worker died, so stalls of
    Redis alone turn a healthy task into poison. Here one worker and no crash: Redis is
    paused past the fencing limit while the task runs, five times."""
    starts: list[float] = []

    async def steady() -> None:
        starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(2.5)

    async with Shadow(name="findings-stalls", url=server.url) as shadow:
        shadow.register(steady)
        await shadow.add(steady, key="steady")()
        worker = Worker(shadow, redelivery_timeout=timedelta(seconds=1))
        running = asyncio.create_task(worker.run_forever())
        try:
            for stall in range(5):
                await wait_for(lambda n=stall: len(starts) > n, 20, f"run {stall + 1}")
                server.pause()  # longer than the fencing limit (0.7 s) and the timeout
                await asyncio.sleep(1.3)
                server.resume()

            async def settled() -> bool:
                state = await shadow.task_state("steady")
                return state in ("completed", "failed")

            await wait_for(settled, 30, "the task to finish")
            state = await shadow.task_state("steady")
            letters = await shadow.client.zrange(shadow.keys.failed, 0, -1)
        finally:
            server.resume()
            worker.stop(force=True)
            await asyncio.gather(running, return_exceptions=True)
    assert letters == [], f"dead-lettered after {len(starts)} runs, none of them a crash"
    assert state == "completed"
