"""Shadows on ``redis+cluster://``, against a real cluster the suite starts (3 masters, 3
replicas): where a shadow's keys live, the producer's side through failovers, and the
strike follower. What does not work on a cluster yet is listed in docs/scaling.md."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import _cleanup, wait_for
from processes import spawn_worker
from redis_topologies import Cluster, query
from shadows import Shadow, Worker
from shadows.core.connection import private_client
from shadows.operations.strikes import StrikeList
from shadows.worker.strike_follower import StrikeFollower
from test_cli import shadows_cli_in_process
from worker_tasks import read_records, record_and_sleep

ran: list[str] = []


async def note(label: str) -> None:
    ran.append(label)


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def keys_on(port: int, prefix: str) -> list[str]:
    _, found = query(port, "SCAN", 0, "MATCH", f"{prefix}*", "COUNT", 10_000)
    return list(found)


async def test_a_shadow_lives_on_the_node_of_its_hash_tag(
    redis_cluster: Cluster, shadow_name: str
) -> None:
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        try:
            scheduled = await shadow.add(note, when=later(), key="scheduled")("s")
            await shadow.add(note, key="queued")("q")
            home = redis_cluster.master_for(f"{{{shadow_name}}}")
            assert shadow.keys.run(scheduled.key) in keys_on(home.port, shadow.keys.prefix)
            for other in redis_cluster.masters():
                if other is not home:
                    assert keys_on(other.port, shadow.keys.prefix) == []
            # the producer's side and the read-only commands
            assert await shadow.task_state("queued") == "queued"
            snapshot = await shadow.snapshot()
            found = {(task.key, task.state, task.args) for task in snapshot.future}
            assert found == {("scheduled", "scheduled", ("s",)), ("queued", "queued", ("q",))}
            assert await shadow.strike(note, "label", "==", "q")
            assert [str(strike) for strike in await shadow.strikes()] == ["note(label == 'q')"]
            assert await shadow.cancel("scheduled")
            assert await shadow.failed() == []
            assert await shadow.clear() == 1
            # commands are packed by hiredis on every node, as on one server
            connection_class = shadow.client.nodes_manager.connection_kwargs["connection_class"]  # type: ignore[attr-defined]
            assert connection_class.__mro__[1].__name__ == "_HiredisPacking"
            # the probes' client of the health and metrics endpoints: a cluster client too
            probes = private_client(shadow.client, connections=2)
            try:
                assert await probes.ping()
                assert await probes.xlen(shadow.keys.stream) == 0
            finally:
                await probes.aclose()
        finally:
            await _cleanup(shadow)


async def test_the_operator_commands_on_a_cluster(redis_cluster: Cluster, shadow_name: str) -> None:
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        try:
            await shadow.add(note, when=later(), key="waiting")("w")
            where = ["--url", redis_cluster.url, "--shadows", shadow_name]
            listed = await asyncio.to_thread(shadows_cli_in_process, "snapshot", "--json", *where)
            assert listed.returncode == 0, listed.stderr
            assert [task["key"] for task in json.loads(listed.stdout)["future"]] == ["waiting"]
            struck = await asyncio.to_thread(shadows_cli_in_process, "strike", "note", *where)
            assert struck.returncode == 0, struck.stderr
            assert [strike.function for strike in await shadow.strikes()] == ["note"]
            cleared = await asyncio.to_thread(shadows_cli_in_process, "clear", "--yes", *where)
            assert cleared.returncode == 0, cleared.stderr
            assert await shadow.client.zcard(shadow.keys.queue) == 0
        finally:
            await _cleanup(shadow)


async def test_a_batch_keeps_its_order_on_a_cluster(
    redis_cluster: Cluster, shadow_name: str
) -> None:
    """redis-py refuses scripts in a cluster pipeline: a batch sends its calls one by one,
    in order, so a key added twice is "exists" the second time, across calls too."""
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        try:
            async with shadow.batch() as batch:
                for i in range(250):
                    batch.add(note, when=later(), key="twice" if i in (10, 220) else None)(str(i))
            assert batch.outcomes[10] == "scheduled"
            assert batch.outcomes[220] == "exists"
            assert batch.outcomes.count("scheduled") == 249
            assert await shadow.client.zcard(shadow.keys.queue) == 249
        finally:
            await _cleanup(shadow)


async def test_producers_follow_a_failover_and_a_killed_master(
    redis_cluster: Cluster, shadow_name: str
) -> None:
    tag = f"{{{shadow_name}}}"
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        try:
            await shadow.add(note, when=later(), key="before")("b")
            await asyncio.to_thread(redis_cluster.wait_replicated)
            await asyncio.to_thread(redis_cluster.failover, redis_cluster.master_for(tag))
            await shadow.add(note, when=later(), key="after-failover")("f")
            await asyncio.to_thread(redis_cluster.wait_replicated)
            killed = redis_cluster.master_for(tag)
            promoted = await asyncio.to_thread(redis_cluster.kill_master, killed)
            await shadow.add(note, when=later(), key="after-kill")("k")
            assert redis_cluster.master_for(tag) is promoted
            for key in ("before", "after-failover", "after-kill"):
                assert await shadow.task_state(key) == "scheduled"
            assert await shadow.client.zcard(shadow.keys.queue) == 3
        finally:
            await asyncio.to_thread(redis_cluster.heal)
            await _cleanup(shadow)


async def test_the_strike_follower_follows_a_failover(
    redis_cluster: Cluster, shadow_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It blocks on the feed on a connection of its own to the feed's node; when that node
    becomes a replica, it finds the new master and carries on."""
    tag = f"{{{shadow_name}}}"
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        strikes = StrikeList()
        stopping = asyncio.Event()
        follower = StrikeFollower(shadow, strikes, reconnect_cap=0.5)
        following = asyncio.create_task(follower.run(stopping))
        try:
            await shadow.strike(note, "label", "==", "first")
            await wait_for(lambda: len(strikes) == 1, 10, "the first strike")
            with caplog.at_level(logging.INFO, logger="shadows.worker"):
                await asyncio.to_thread(redis_cluster.failover, redis_cluster.master_for(tag))
                await shadow.strike(note, "label", "==", "second")
                await wait_for(lambda: len(strikes) == 2, 20, "the strike after the failover")
            assert not following.done()
        finally:
            stopping.set()
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await _cleanup(shadow)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an outage, not a bug"


async def test_a_worker_runs_on_a_cluster(redis_cluster: Cluster, shadow_name: str) -> None:
    ran.clear()
    async with Shadow(name=shadow_name, url=redis_cluster.url) as shadow:
        try:
            async with Worker(shadow) as worker:
                running = asyncio.create_task(worker.run_forever())
                # idle, so it blocks on the stream; a worker that cannot stops at once
                done, _ = await asyncio.wait({running}, timeout=1)
                if done:
                    running.result()
                await shadow.add(note)("on a cluster")
                await wait_for(lambda: ran == ["on a cluster"], 20, "the task to run")
                worker.stop()
                await asyncio.wait_for(running, 20)
        finally:
            await _cleanup(shadow)


def records(path: Path, kind: str) -> set[str]:
    return {record[1] for record in read_records(path) if record[0] == kind}


@pytest.mark.parametrize("failure", ["failover", "killed"])
async def test_a_worker_rides_out_a_failover(
    redis_cluster: Cluster, shadow_name: str, tmp_path: Path, failure: str
) -> None:
    """While a worker process runs tasks, the master of the shadow's slot hands over to
    its replica (``CLUSTER FAILOVER``) or is killed: the worker carries on against the new
    master without a restart, and every task runs (running, queued and scheduled ones,
    and those added after)."""
    runs, log = tmp_path / "runs", tmp_path / "worker.log"
    tag = f"{{{shadow_name}}}"
    worker = spawn_worker(
        redis_cluster.url,
        shadow_name,
        "--concurrency",
        "3",
        "--redelivery-timeout",
        "2s",
        log=log,
    )
    try:
        async with Shadow(name=shadow_name, url=redis_cluster.url) as producer:
            soon = datetime.now(UTC) + timedelta(seconds=2)
            for i in range(4):
                await producer.add(record_and_sleep, when=soon)(str(runs), f"later-{i}", 0)
            for i in range(12):
                await producer.add(record_and_sleep)(str(runs), f"before-{i}", 0.3)
            await wait_for(lambda: len(records(runs, "start")) >= 3, 30, "tasks to start")
            await asyncio.to_thread(redis_cluster.wait_replicated)
            master = redis_cluster.master_for(tag)
            fail = redis_cluster.kill_master if failure == "killed" else redis_cluster.failover
            promoted = await asyncio.to_thread(fail, master)
            assert redis_cluster.master_for(tag) is promoted is not master
            for i in range(6):
                await producer.add(record_and_sleep)(str(runs), f"after-{i}", 0)
            expected = {f"later-{i}" for i in range(4)}
            expected |= {f"before-{i}" for i in range(12)} | {f"after-{i}" for i in range(6)}
            await wait_for(
                lambda: expected <= records(runs, "end"), 60, f"every task to run (log: {log})"
            )
            assert worker.poll() is None, "the worker process must ride the failover out"

            async def drained() -> bool:
                stream = await producer.client.xlen(producer.keys.stream)
                return stream + await producer.client.zcard(producer.keys.queue) == 0

            await wait_for(drained, 30, "nothing left on the stream or in the queue")
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()[-3000:]
            await _cleanup(producer)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await asyncio.to_thread(redis_cluster.heal)


def lua_scripts() -> dict[str, str]:
    """Every Lua script of the package: module-level strings that call Redis."""
    import importlib
    import pkgutil

    import shadows

    found: dict[str, str] = {}
    for module_info in pkgutil.walk_packages(shadows.__path__, "shadows."):
        if module_info.name.startswith(("shadows.cli", "shadows.settings", "shadows.__")):
            continue  # no scripts there (and __main__ runs the command)
        try:
            module = importlib.import_module(module_info.name)
        except ImportError:  # the dashboard's extra is not installed
            continue
        for name, value in vars(module).items():
            if isinstance(value, str) and "redis.call" in value:
                found[f"{module_info.name}.{name}"] = value
    for path in Path(shadows.__path__[0]).rglob("*.lua"):  # scripts kept in files
        found[str(path)] = path.read_text()
    return found


def test_every_script_declares_the_keys_it_touches() -> None:
    """A cluster runs a script on the node of its declared keys, and a slot that migrates
    while a script runs aborts it midway at the first undeclared key: no script builds a
    key name (Lua's ``..``) or takes a key prefix as an argument. A run's events channel
    (its key plus ``:events``) is built in Lua: a channel is not a key, and a cluster carries
    a PUBLISH to every node's subscribers whatever its name."""
    scripts = lua_scripts()
    assert len(scripts) >= 20, sorted(scripts)
    for name, source in scripts.items():
        lua = "\n".join(line.split("--")[0] for line in source.splitlines())
        lua = re.sub(r"'PUBLISH', \w+ \.\. ':events'", "'PUBLISH', channel", lua)
        assert ".." not in lua, f"{name} builds a string, maybe a key name"
        assert "prefix" not in lua, f"{name} takes a key prefix"


async def test_commands_wait_for_a_free_connection(
    redis_cluster: Cluster, shadow_name: str
) -> None:
    """redis-py's cluster client refuses a command once ``max_connections`` are in use on
    a node; a shadow's waits for one instead, as on one server."""
    url = f"{redis_cluster.url}?max_connections=2"
    async with Shadow(name=shadow_name, url=url) as shadow:
        try:
            states = await asyncio.gather(*(shadow.task_state(f"k{i}") for i in range(200)))
            assert set(states) == {None}
            await asyncio.gather(*(shadow.add(note, when=later())(str(i)) for i in range(50)))
            assert await shadow.client.zcard(shadow.keys.queue) == 50
            for node in shadow.client.get_nodes():  # type: ignore[union-attr]
                assert len(node._connections) <= 2
        finally:
            await _cleanup(shadow)
