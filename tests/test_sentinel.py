"""Shadows on ``redis+sentinel://``, against real sentinels the suite starts (a master, a
replica and 3 sentinels): the client follows the master, passwords, and a failover in the
middle of a run."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AuthenticationError, ConnectionError

from conftest import wait_for
from processes import spawn_worker
from redis_topologies import SentinelGroup, query, role
from shadows import Shadow, Worker
from shadows.core.connection import private_client
from shadows.core.sentinel_pool import BlockingSentinelPool
from worker_tasks import read_records, record_and_sleep

ran: list[str] = []


async def note(label: str) -> None:
    ran.append(label)


async def test_a_shadow_on_sentinel_talks_to_the_master(
    redis_sentinel: SentinelGroup, shadow_name: str
) -> None:
    async with Shadow(name=shadow_name, url=redis_sentinel.url) as shadow:
        execution = await shadow.add(note, when=datetime.now(UTC) + timedelta(hours=1))("x")
        master = redis_sentinel.master()
        assert query(master.port, "HGET", shadow.keys.run(execution.key), "state") == "scheduled"
        # the same pool as for one server: blocking, commands packed by hiredis
        pool = shadow.client.connection_pool
        assert isinstance(pool, BlockingConnectionPool)
        assert pool.connection_class.__mro__[1].__name__ == "_HiredisPacking"
        # the probes' client of the health and metrics endpoints asks the sentinels too
        probes = private_client(shadow.client, connections=2)
        try:
            assert isinstance(probes.connection_pool, SentinelConnectionPool)
            assert await probes.hget(shadow.keys.run(execution.key), "state") == b"scheduled"
        finally:
            await probes.aclose()
        await shadow.clear()


async def test_passwords_of_the_servers_and_of_the_sentinels(shadow_name: str) -> None:
    with SentinelGroup(password="data-s3cret", sentinel_password="sentinel-s3cret") as group:
        ran.clear()
        async with Shadow(name=shadow_name, url=group.url) as shadow:
            assert "s3cret" not in repr(shadow)
            await shadow.add(note)("with passwords")
            async with Worker(shadow) as worker:
                await asyncio.wait_for(worker.run_until_finished(), 20)
        assert ran == ["with passwords"]

        wrong_sentinel = group.url.replace("sentinel-s3cret", "wrong")
        async with Shadow(name=shadow_name, url=wrong_sentinel) as shadow:
            with pytest.raises(ConnectionError, match="No master found") as raised:
                await shadow.add(note)("never")
            assert "s3cret" not in str(raised.value)

        wrong_server = group.url.replace("data-s3cret", "wrong")
        async with Shadow(name=shadow_name, url=wrong_server) as shadow:
            with pytest.raises(AuthenticationError):
                await shadow.add(note)("never")


async def test_every_command_on_a_connection_lets_its_pool_check_the_master(
    redis_sentinel: SentinelGroup, shadow_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command sent, on a new connection or one already open, gives the pool its
    chance to ask the sentinels whether the master moved (at most once a second): the
    check must not depend on which of shadows' connection behaviours sends it."""
    checks = 0
    real_check = BlockingSentinelPool.check_due

    def counting(pool: BlockingSentinelPool) -> None:
        nonlocal checks
        checks += 1
        real_check(pool)

    monkeypatch.setattr(BlockingSentinelPool, "check_due", counting)
    async with Shadow(name=shadow_name, url=redis_sentinel.url) as shadow:
        await shadow.client.set(f"{shadow_name}:probe", "0")
        before = checks
        for n in range(5):
            await shadow.client.set(f"{shadow_name}:probe", str(n))
        await shadow.client.delete(f"{shadow_name}:probe")
    assert checks - before >= 5


async def test_after_a_promotion_no_connection_stays_on_the_old_master(
    redis_sentinel: SentinelGroup, shadow_name: str
) -> None:
    """A planned failover promotes the replica at once but leaves the old master a
    writable master for about 10 s, and everything written to it then is discarded. A
    connection opened before (here the one a worker's reader holds, on a pool of its
    own) must not keep writing to it: once a client in use sees the sentinels name
    another master (within about a second), every pool of the same sentinels leaves the
    old one."""
    async with Shadow(name=shadow_name, url=redis_sentinel.url) as shadow:
        reader = private_client(shadow.client, connections=1)
        held = reader.client()  # one connection, held like the reader's
        try:
            await held.set(f"{shadow_name}:probe", "before")
            old = await asyncio.to_thread(redis_sentinel.promote)
            new = redis_sentinel.master()
            try:

                async def on_the_new_master() -> bool:
                    """The shadow's client in use, until its writes land on the new
                    master (it asks the sentinels at most once a second)."""
                    await shadow.client.set(f"{shadow_name}:busy", "x")
                    return query(new.port, "GET", f"{shadow_name}:busy") == "x"

                await wait_for(on_the_new_master, 8, "the shadow's client to move")
                assert role(old.port) == "master", "the old master is demoted already"
                for _ in range(2):  # a command the cut connection fails is retried
                    try:
                        await held.set(f"{shadow_name}:probe", "after")
                        break
                    except ConnectionError:
                        continue
                assert query(new.port, "GET", f"{shadow_name}:probe") == "after"
                assert query(old.port, "GET", f"{shadow_name}:probe") == "before"
            finally:
                await asyncio.to_thread(redis_sentinel.wait_demoted, old)
        finally:
            await held.aclose()
            await reader.aclose()
            await shadow.client.delete(f"{shadow_name}:probe", f"{shadow_name}:busy")


def starts(path: Path) -> set[str]:
    return {record[1] for record in read_records(path) if record[0] == "start"}


def ends(path: Path) -> set[str]:
    return {record[1] for record in read_records(path) if record[0] == "end"}


def starts_per_task(path: Path) -> Counter[str]:
    return Counter(record[1] for record in read_records(path) if record[0] == "start")


async def run_through_a_failover(
    group: SentinelGroup, shadow_name: str, tmp_path: Path, failure: str
) -> Path:
    """A worker process runs tasks while the master fails (``killed``) or is handed over
    (``planned``); returns the file of the runs (``start``/``end`` lines) once every task
    has run and the worker has stopped."""
    runs, log = tmp_path / "runs", tmp_path / "worker.log"
    url = group.url
    worker = spawn_worker(
        url, shadow_name, "--concurrency", "3", "--redelivery-timeout", "2s", log=log
    )
    try:
        async with Shadow(name=shadow_name, url=url) as producer:
            later = datetime.now(UTC) + timedelta(seconds=2)
            for i in range(4):
                await producer.add(record_and_sleep, when=later)(str(runs), f"later-{i}", 0)
            for i in range(12):
                await producer.add(record_and_sleep)(str(runs), f"before-{i}", 0.3)
            await wait_for(lambda: len(starts(runs)) >= 3, 30, "the worker to start tasks")
            # A write the master acknowledged but had not yet sent to its replica is lost
            # with the master: the documented exception. Here, every add has reached it.
            await asyncio.to_thread(group.wait_replicated)
            old = group.master()
            fail = group.kill_master if failure == "killed" else group.failover
            new = await asyncio.to_thread(fail)
            assert new is not old
            for i in range(6):
                await producer.add(record_and_sleep)(str(runs), f"after-{i}", 0)
            expected = {f"later-{i}" for i in range(4)}
            expected |= {f"before-{i}" for i in range(12)} | {f"after-{i}" for i in range(6)}
            await wait_for(
                lambda: expected <= ends(runs),
                60,
                f"every task to run after the failover (log: {log})",
            )
            assert worker.poll() is None, "the worker process must ride the failover out"

            async def drained() -> bool:
                stream = await producer.client.xlen(producer.keys.stream)
                return stream + await producer.client.zcard(producer.keys.queue) == 0

            await wait_for(drained, 30, "nothing to be left on the stream or in the queue")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await asyncio.to_thread(group.heal)
    # the worker did meet the outage (and reported it) rather than miss it
    assert "retrying in" in log.read_text()
    return runs


@pytest.mark.parametrize("failure", ["killed", "planned"])
async def test_a_producer_and_a_worker_follow_a_failover(
    redis_sentinel: SentinelGroup, shadow_name: str, tmp_path: Path, failure: str
) -> None:
    """While a worker process runs tasks, the master is killed (the sentinels promote the
    replica) or handed over (``SENTINEL FAILOVER``: the master becomes a replica, which
    ends the commands blocked on it): the worker and the producer carry on against the
    new master. Every task runs: the ones added before (running, queued and scheduled
    for later) and the ones added after.

    Without ``min-replicas-to-write``, a planned failover discards what the worker wrote
    to the old master after the promotion (STARTs, outcomes, acknowledgements, due tasks
    moved) until it leaves it, within about 2 s (the sentinels demote it only about 10 s
    later): the tasks it ran then run again (see docs/scaling.md and the next tests)."""
    await run_through_a_failover(redis_sentinel, shadow_name, tmp_path, failure)


async def test_a_planned_failover_runs_no_task_twice_with_min_replicas_to_write(
    shadow_name: str, tmp_path: Path
) -> None:
    """The setting docs/scaling.md gives for planned failovers: the old master refuses
    writes once its replica is promoted (``NOREPLICAS``, which the worker takes for "not
    the master"), so nothing the worker does in the window is discarded and no task runs
    twice; the new master refuses writes too until the demoted one replicates it."""
    settings = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "2")
    with SentinelGroup(server_args=settings) as group:
        runs = await run_through_a_failover(group, shadow_name, tmp_path, "planned")
    twice = {task: count for task, count in starts_per_task(runs).items() if count > 1}
    assert twice == {}, f"tasks run more than once: {twice} (log: {tmp_path / 'worker.log'})"
