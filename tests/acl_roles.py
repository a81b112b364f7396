"""What each least-privilege role does, against a real server: the workloads that
``tests/test_acl.py`` runs as the users ``docs/least-privilege.md`` documents.

Run as a program, it runs each workload as the default user of a fresh server and prints
the commands the server counted (``INFO commandstats``, which counts the commands the
Lua scripts run too): the lists the documented ACLs are made from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis_server import RedisProcess
from shadows import (
    ConcurrencyLimit,
    Cooldown,
    Debounce,
    Perpetual,
    Progress,
    RateLimit,
    Retry,
    Shadow,
    Worker,
)
from shadows.core.execution import now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.operations.registry import Presence, beat
from test_cli import shadows_cli_in_process

NAME = "orders"
TESTS = Path(__file__).parent
ran: list[str] = []


async def ok(label: str) -> None:
    ran.append(label)


async def broken(retry: Retry = Retry(attempts=2)) -> None:
    raise RuntimeError("broken for good")


async def limited(
    customer: str, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
) -> None:
    await asyncio.sleep(0.05)
    ran.append(f"limited {customer}")


async def cooled(customer: str, cooldown: Cooldown = Cooldown(timedelta(minutes=5))) -> None:
    ran.append(f"cooled {customer}")


async def rated(n: int, rate: RateLimit = RateLimit(100, per=timedelta(minutes=1))) -> None:
    ran.append(f"rated {n}")


async def ticking(perpetual: Perpetual = Perpetual(every=timedelta(milliseconds=200))) -> None:
    ran.append("tick")


async def settling(n: int) -> None:
    ran.append(f"settled {n}")


async def reporting(progress: Progress = Progress()) -> int:
    await progress.set_total(2)
    await progress.increment(2)
    await progress.set_message("reported")
    ran.append("reported")
    return 2


TASKS = [ok, broken, limited, cooled, rated, ticking, reporting]


def register(shadow: Shadow) -> None:
    for function in TASKS:
        shadow.register(function)
    shadow.task(debounce=Debounce(timedelta(milliseconds=100)))(settling)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def producer(url: str) -> None:
    """Adds, replaces, cancels, batches, debounces and asks for a task's state."""
    async with Shadow(name=NAME, url=url) as shadow:
        register(shadow)
        later = datetime.now(UTC) + timedelta(hours=1)
        await shadow.add(ok, key="now")("now")
        await shadow.add(ok, key="now")("again")  # exists
        await shadow.add(ok, when=later, key="later")("later")
        await shadow.replace(ok, when=later + timedelta(minutes=1), key="later")("moved")
        assert await shadow.cancel("later")
        async with shadow.batch() as batch:
            for i in range(5):
                batch.add(ok, when=later)(f"batched {i}")
        for i in range(3):
            await shadow.add(settling)(i)
        assert await shadow.task_state("now") == "queued"
        found = await shadow.get_execution("now")
        assert found is not None
        with contextlib.suppress(TimeoutError):
            await found.get_result(timeout=0.05)  # waits on the run's channel


async def prepare(admin_url: str) -> None:
    """Work for :func:`worker`, added as another user."""
    ran.clear()
    async with Shadow(name=NAME, url=admin_url) as admin:
        register(admin)
        for label in ("a", "b"):
            await admin.add(ok)(label)
        await admin.add(broken, key="broken")()
        for customer in ("c1", "c1", "c2"):
            await admin.add(limited)(customer)
        await admin.add(cooled)("x")
        await admin.add(cooled)("x")
        await admin.add(rated)(1)
        await admin.add(settling)(7)
        await admin.add(reporting, key="reporting")()
        await admin.add(ticking, key="ticking")()
        await admin.add(ok, when=datetime.now(UTC) + timedelta(milliseconds=300))("soon")
        await admin.strike(ok, "label", "==", "struck")
        await admin.add(ok)("struck")


async def worker(url: str) -> None:
    """Runs every kind of task (retries, dead letters, concurrency limits, cooldowns,
    rate limits, perpetual and debounced tasks), follows a strike, and stops cleanly."""
    async with Shadow(name=NAME, url=url) as shadow:
        register(shadow)
        async with Worker(shadow, concurrency=4, name="w1") as running:
            task = asyncio.create_task(running.run_forever())
            wanted = {
                "a",
                "b",
                "soon",
                "limited c1",
                "limited c2",
                "cooled x",
                "rated 1",
                "settled 7",
                "tick",
                "reported",
            }

            async def done() -> bool:
                return (
                    wanted <= set(ran)
                    and ran.count("limited c1") == 2
                    and await shadow.task_state("broken") == "failed"
                )

            try:
                await wait_for(done, 30, f"every task to run (ran: {ran})")
            finally:
                running.stop()
                await asyncio.wait_for(task, 30)
    assert "struck" not in ran


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``shadows ARGS`` as the user of ``url``, in-process (what the commands print and
    return is what is checked; see ``test_cli.shadows_cli_in_process``)."""
    return shadows_cli_in_process(
        *args,
        "--url",
        url,
        "--shadows",
        NAME,
        environment={**os.environ, "PYTHONPATH": str(TESTS)},
    )


async def reader(url: str) -> None:
    """The read-only operations: snapshots, strikes, dead letters, workers, task states,
    through the API and the CLI."""
    async with Shadow(name=NAME, url=url) as shadow:
        await shadow.snapshot()
        await shadow.strikes()
        await shadow.failed()
        await shadow.failed_task("broken")
        await shadow.workers()
        await shadow.task_state("now")
        reported = await shadow.get_execution("reporting")
        assert reported is not None and reported.progress.message == "reported"
        assert await reported.get_result(timeout=5) == 2
    for args in (
        ("snapshot", "--json"),
        ("strikes",),
        ("failed", "ls"),
        ("workers", "ls"),
    ):
        result = await asyncio.to_thread(cli, url, *args)
        assert result.returncode == 0, (args, result.stderr)
    json.loads((await asyncio.to_thread(cli, url, "snapshot", "--json")).stdout)


async def prepare_reader(admin_url: str) -> None:
    """Something for :func:`reader` to read: every kind of task done, a dead letter, a
    strike, a live worker in the registry and a message it holds."""
    await producer(admin_url)
    await prepare(admin_url)
    await worker(admin_url)
    async with Shadow(name=NAME, url=admin_url) as admin:
        await admin.add(ok, key="held")("held")
        await admin.client.xreadgroup(WORKER_GROUP, "w9", {admin.keys.stream: ">"}, count=1)
        await beat(admin, Presence("w9", 1, 1, now_ms(), ["ok"]), 60_000, now_ms())


def counted(server: RedisProcess) -> list[str]:
    import redis

    client = redis.Redis(port=server.port)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    names = [name.removeprefix("cmdstat_") for name in stats]
    return sorted(name for name in names if name not in ("info", "acl|log", "config|set"))


async def main() -> None:
    for role in ("producer", "worker", "reader"):
        with RedisProcess() as server:
            if role == "reader":
                await prepare_reader(server.url)
            else:
                await producer(server.url)
                await prepare(server.url)
            import redis

            admin = redis.Redis(port=server.port)
            admin.config_resetstat()
            admin.close()
            if role == "producer":
                await producer(server.url)
            elif role == "worker":
                await worker(server.url)
            else:
                await reader(server.url)
            print(role, " ".join(counted(server)))


if __name__ == "__main__":
    asyncio.run(main())
