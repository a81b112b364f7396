"""``ConcurrencyLimit`` across workers."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import wait_for
from processes import spawn_worker
from shadows import ConcurrencyLimit, Shadow, Worker
from worker_tasks import limited, read_records


class Tracker:
    """Counts runs in flight, per value and in total, and remembers the peaks."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total = 0
        self.peak_total = 0
        self.done = 0

    async def run(self, *values: str, seconds: float = 0.003) -> None:
        for value in values:
            self.running[value] += 1
            self.peak[value] = max(self.peak[value], self.running[value])
        self.total += 1
        self.peak_total = max(self.peak_total, self.total)
        await asyncio.sleep(seconds)
        for value in values:
            self.running[value] -= 1
        self.total -= 1
        self.done += 1


async def run_workers(shadow: Shadow, count: int, concurrency: int = 10) -> None:
    workers = [
        Worker(
            shadow,
            name=f"limit-{i}",
            concurrency=concurrency,
            scheduling_resolution=timedelta(milliseconds=10),
        )
        for i in range(count)
    ]
    await asyncio.wait_for(asyncio.gather(*(w.run_until_finished() for w in workers)), 60)


async def test_a_limit_holds_across_three_workers_while_other_values_run(
    shadow: Shadow,
) -> None:
    tracker = Tracker()

    async def sync_customer(
        customer_id: str,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer_id", max_concurrent=1),
    ) -> None:
        await tracker.run(customer_id)

    customers = [f"c{i}" for i in range(5)]
    for n in range(200):
        await shadow.add(sync_customer)(customers[n % 5])
    await run_workers(shadow, 3)
    assert tracker.done == 200
    assert all(peak == 1 for peak in tracker.peak.values()), tracker.peak
    assert tracker.peak_total > 1  # different customers did run side by side
    leftovers = [
        k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}concurrency*")
    ]
    leftovers += [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}waiting*")]
    assert leftovers == []


async def test_several_limits_must_all_hold(shadow: Shadow) -> None:
    tracker = Tracker()

    async def ship(
        customer: str,
        region: str,
        per_customer: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1),
        per_region: ConcurrencyLimit = ConcurrencyLimit("region", max_concurrent=2),
    ) -> None:
        await tracker.run(f"customer:{customer}", f"region:{region}")

    rng = random.Random(7)
    for _ in range(80):
        await shadow.add(ship)(rng.choice("abcdef"), rng.choice(["eu", "us"]))
    await run_workers(shadow, 2)
    assert tracker.done == 80
    for name, peak in tracker.peak.items():
        assert peak <= (1 if name.startswith("customer:") else 2), tracker.peak
    assert tracker.peak["region:eu"] == 2 or tracker.peak["region:us"] == 2


async def test_a_limit_without_an_argument_counts_every_run_of_the_task(
    shadow: Shadow,
) -> None:
    tracker = Tracker()

    async def export(n: int, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=2)) -> None:
        await tracker.run("export")

    for n in range(30):
        await shadow.add(export)(n)
    await run_workers(shadow, 2, concurrency=10)
    assert tracker.done == 30
    assert tracker.peak["export"] == 2


async def test_a_shared_scope_limits_several_tasks_together(shadow: Shadow) -> None:
    tracker = Tracker()

    async def backup(n: int, db: ConcurrencyLimit = ConcurrencyLimit(scope="database")) -> None:
        await tracker.run("database")

    async def vacuum(n: int, db: ConcurrencyLimit = ConcurrencyLimit(scope="database")) -> None:
        await tracker.run("database")

    for n in range(10):
        await shadow.add(backup)(n)
        await shadow.add(vacuum)(n)
    await run_workers(shadow, 2)
    assert tracker.done == 20
    assert tracker.peak["database"] == 1


async def test_waiting_tasks_hold_no_worker_slot_and_do_not_spin(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    async def job(
        customer: str, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
    ) -> None:
        await asyncio.sleep(0.05)
        order.append(customer)

    for _ in range(5):
        await shadow.add(job)("busy")
    for _ in range(3):
        await shadow.add(job)("other")
    with caplog.at_level(logging.INFO, logger="shadows"):
        async with Worker(shadow, concurrency=2) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 30)
    assert Counter(order) == {"busy": 5, "other": 3}
    # the "other" customer was not stuck behind the queue of "busy" ones
    assert order.index("other") < len(order) - 3
    waits = caplog.text.count("waits for a free concurrency slot")
    assert 0 < waits <= 12


async def test_a_missing_limit_argument_fails_the_task_clearly(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def wrong(
        n: int, limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1)
    ) -> None:
        pass

    await shadow.add(wrong, key="wrong-limit")(1)
    with caplog.at_level(logging.ERROR, logger="shadows"):
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
    assert "ConcurrencyLimit on 'customer': the task has no such argument" in caplog.text
    assert await shadow.task_state("wrong-limit") == "failed"


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimit("x", max_concurrent=0)
    with pytest.raises(ValueError, match="scope"):
        ConcurrencyLimit("x", scope="")


async def test_a_killed_holders_slot_is_freed(
    redis_url: str, shadow_name: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    async with Shadow(name=shadow_name, url=redis_url) as shadow:
        await shadow.add(limited, key="holder")(str(runs), "acme", 1.5)
        holder = spawn_worker(
            redis_url, shadow_name, "--redelivery-timeout", "1s", log=tmp_path / "holder.log"
        )
        try:
            await wait_for(lambda: bool(read_records(runs)), 30, "the holder to start")
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
        finally:
            holder.kill()
        # The next run for the same customer must not wait forever for the dead holder.
        await shadow.add(limited, key="next")(str(runs), "acme", 0)
        async with Worker(
            shadow,
            name="survivor",
            redelivery_timeout=timedelta(seconds=1),
            scheduling_resolution=timedelta(milliseconds=20),
        ) as worker:
            shadow.register(limited)
            running = asyncio.create_task(worker.run_forever())
            try:
                await wait_for(
                    lambda: sum(r[0] == "end" for r in read_records(runs)) == 2,
                    20,
                    "the redelivered holder and the next run for the same customer",
                )
            finally:
                worker.stop(force=True)
                await running
    records = read_records(runs)
    starts = [r for r in records if r[0] == "start"]
    assert starts[0][2] == str(holder.pid)
    assert len(starts) == 3  # killed, redelivered, next
    # after the kill, the two runs for "acme" did not overlap
    survivor = [(r[0], float(r[3])) for r in records[1:]]
    assert [kind for kind, _ in survivor] == ["start", "end", "start", "end"]
