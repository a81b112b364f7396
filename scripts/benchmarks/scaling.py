"""Drain throughput on one Redis server against a Redis Cluster (one shadow with
``shards=1``, then with ``shards=3``), with 1, 2 and 4 worker processes, and the Redis CPU
each task costs (``INFO cpu`` of every server, before and after).

    python scripts/benchmarks/scaling.py                 # 20,000 tasks per cell
    python scripts/benchmarks/scaling.py --tasks 5000 --workers 1,2 --on server,sharded
    python scripts/benchmarks/scaling.py --tasks 10000 --rounds 3   # medians of 3

Each cell: a fresh shadow, the worker processes started and registered (idle), the tasks
added in batches, all due at one moment a little later; the clock starts at that moment
(the workers' schedulers move them to the stream, the workers run them) and stops when
the queue and the stream are empty. Both Redis deployments are private, throw-away servers
started here (no persistence; the cluster has 3 masters and no replicas, so that
replication does not take CPU from the machine). With ``shards=3`` any name's three
shards land on the three masters (shadows.core.spread places their hash tags); the run
checks it. Results go to ``scripts/benchmarks/results/scaling.json`` and are printed as a
Markdown table, with the Redis-bound capacity of each cell: 1 / (Redis CPU per task x the
busiest server's share), the rate at which the busiest server's one CPU would saturate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402

from redis_server import RedisProcess  # noqa: E402
from redis_topologies import Cluster  # noqa: E402
from shadows import Shadow  # noqa: E402
from shadows.core.keys import Keys  # noqa: E402

#: The task module the worker processes import (a no-op task).
TASKS = "scaling_tasks:tasks"


async def noop() -> None:
    pass


def cpu_seconds(ports: list[int]) -> dict[int, float]:
    """Redis CPU (user + system) used so far by each of the servers on ``ports``."""
    used = {}
    for port in ports:
        client = redis.Redis(port=port)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        used[port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return used


def spread_name(cluster: Cluster | None, shards: int) -> str:
    """A fresh shadow name; on a cluster, check that its ``shards`` hash tags are served by
    different masters (as many as there are): the layout spreads them for any name
    (shadows.core.spread), so no search is needed, and a failure here is a bug."""
    name = f"scaling-{uuid.uuid4().hex[:8]}"
    if cluster is not None and shards > 1:
        masters = {cluster.master_for(Keys(name, i).stream).port for i in range(shards)}
        if len(masters) != min(shards, len(cluster.masters())):
            raise SystemExit(f"{name}: {shards} shards on {len(masters)} masters")
    return name


def spawn(url: str, name: str, concurrency: int, shards: int, log: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(HERE), "SHADOW_SHARDS": str(shards)}
    with open(log, "ab") as output:
        return subprocess.Popen(
            [
                sys.executable, "-m", "shadows", "worker",
                "--url", url, "--shadows", name, "--tasks", TASKS,
                "--concurrency", str(concurrency), "--logging-level", "WARNING",
            ],
            stdout=output, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip


async def wait_until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def cell(
    target: Target, workers: int, tasks: int, concurrency: int, logs: Path
) -> dict[str, Any]:
    name = spread_name(target.cluster, target.shards)
    processes = [
        spawn(target.url, name, concurrency, target.shards, logs / f"{name}-{i}.log")
        for i in range(workers)
    ]
    shards = [Keys(name, i) for i in range(target.shards)]
    try:
        async with Shadow(name=name, url=target.url, shards=target.shards) as shadow:
            shadow.register(noop)

            async def registered() -> bool:
                return len(await shadow.workers()) == workers

            await wait_until(registered, 60, "the workers to start")
            # Every task is due at one moment, after all are added: the workers are idle
            # until then, and the clock measures the drain alone.
            due = datetime.now(UTC) + timedelta(seconds=2 + tasks / 2000)
            started = time.perf_counter()
            for first in range(0, tasks, 1000):
                async with shadow.batch() as batch:
                    for _ in range(min(1000, tasks - first)):
                        batch.add(noop, when=due)()
            added = time.perf_counter() - started
            if datetime.now(UTC) >= due:
                raise RuntimeError("adding took longer than planned: the drain overlapped it")
            await asyncio.sleep((due - datetime.now(UTC)).total_seconds())
            cpu_before = cpu_seconds(target.ports)
            started = time.perf_counter()

            async def drained() -> bool:
                async with shadow.client.pipeline(transaction=False) as pipe:
                    for keys in shards:
                        pipe.xlen(keys.stream)
                        pipe.zcard(keys.queue)
                    counts = await pipe.execute()
                return sum(int(count) for count in counts) == 0

            await wait_until(drained, 600, "the tasks to drain")
            seconds = time.perf_counter() - started
            cpu_after = cpu_seconds(target.ports)
            by_server = {port: cpu_after[port] - cpu_before[port] for port in target.ports}
            cpu = sum(by_server.values())
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "workers": workers,
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "add_seconds": round(added, 3),  # before the clock starts
        "tasks_per_second": round(tasks / seconds),
        "redis_cpu_seconds": round(cpu, 3),
        "redis_cpu_us_per_task": round(cpu / tasks * 1e6, 1),
        # the busiest server's share: 1.0 when one master does all the work
        "busiest_server_share": round(max(by_server.values()) / cpu, 2) if cpu else None,
        # the machine's load (1 minute) as the cell ended: the workers share its CPUs
        "load_average": round(os.getloadavg()[0], 1),
    }


@dataclass(frozen=True)
class Target:
    """A deployment to measure and the shadow's shard count on it."""

    label: str
    url: str
    #: The servers doing the work, whose CPU is read.
    ports: list[int]
    shards: int = 1
    cluster: Cluster | None = None


@contextmanager
def deployments(which: list[str]) -> Iterator[list[Target]]:
    """The deployments to measure: ``server``, ``cluster`` (shards=1), ``sharded``
    (the same cluster, shards=3)."""
    single = RedisProcess() if "server" in which else None
    on_cluster = {"cluster", "sharded"} & set(which)
    cluster = Cluster(masters=3, replicas=0) if on_cluster else None
    try:
        found = []
        if single is not None:
            single.start()
            found.append(Target("one server", single.url, [single.port]))
        if cluster is not None:
            cluster.start()
            ports = [node.port for node in cluster.nodes]
            if "cluster" in which:
                found.append(Target("cluster, 3 masters, shards=1", cluster.url, ports, 1, cluster))
            if "sharded" in which:
                found.append(Target("cluster, 3 masters, shards=3", cluster.url, ports, 3, cluster))
        yield found
    finally:
        if single is not None:
            single.stop()
        if cluster is not None:
            cluster.stop()


async def main(
    tasks: int, workers: list[int], concurrency: int, which: list[str], rounds: int
) -> None:
    logs = HERE / "results" / "logs.tmp"
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with deployments(which) as targets:
        # rounds interleave the cells, so that a change in the machine's load (it is
        # shared) falls on every deployment alike; the table shows each cell's median
        for number in range(1, rounds + 1):
            for target in targets:
                for count in workers:
                    result = await cell(target, count, tasks, concurrency, logs)
                    result["deployment"] = target.label
                    result["round"] = number
                    rows.append(result)
                    print(json.dumps(result), flush=True)
    lines = [
        "| Deployment | Worker processes | Tasks/s | Redis CPU per task | Busiest server "
        "| Redis-bound capacity |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["deployment"], row["workers"]), []).append(row)
    for (deployment, count), measured in cells.items():
        rate = statistics.median(row["tasks_per_second"] for row in measured)
        cpu = statistics.median(row["redis_cpu_us_per_task"] for row in measured)
        share = statistics.median(row["busiest_server_share"] or 0 for row in measured)
        spread = ""
        if len(measured) > 1:
            low = min(row["tasks_per_second"] for row in measured)
            high = max(row["tasks_per_second"] for row in measured)
            spread = f" ({low:,}-{high:,})"
        # the rate at which the busiest server's one CPU would saturate: 1 / (Redis CPU
        # per task x its share), per round, the median
        capacity = statistics.median(
            1e6 / (row["redis_cpu_us_per_task"] * (row["busiest_server_share"] or 1))
            for row in measured
        )
        lines.append(
            f"| {deployment} | {count} | {rate:,.0f}{spread} | {cpu:.0f} us | {share:.0%} "
            f"| {capacity:,.0f}/s |"
        )
    print("\n".join(lines))
    output = HERE / "results" / "scaling.json"
    output.write_text(
        json.dumps(
            {
                "tasks": tasks,
                "concurrency": concurrency,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--concurrency", type=int, default=50, help="per worker process")
    parser.add_argument(
        "--on",
        default="server,cluster,sharded",
        help="any of server, cluster (shards=1) and sharded (the cluster, shards=3)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    arguments = parser.parse_args()
    asyncio.run(
        main(
            arguments.tasks,
            [int(n) for n in arguments.workers.split(",")],
            arguments.concurrency,
            arguments.on.split(","),
            arguments.rounds,
        )
    )
