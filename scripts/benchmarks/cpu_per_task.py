"""CPU per task of versions of shadows, interleaved, on a private redis-server.

    python scripts/benchmarks/cpu_per_task.py --version old=../old/.venv/bin/python \
        --version new=.venv/bin/python --tasks 2000 --rounds 30

Each version runs in one long-lived process (warmed up once). A round, in that process,
adds the tasks one by one (the process's CPU time over the adds is the producer's cost,
their wall time the add rate), then one worker drains them at concurrency 10 (its CPU
over the drain is the worker's cost, its wall time the drain rate). The Redis server's
CPU (INFO cpu) and its command counters (INFO commandstats, commands run inside scripts
included) are read around each phase. Rounds alternate between the versions, the order
turning every round, so that a change in load hits both sides of a round; the table
prints each version's median and range, and the median of the round-by-round ratios
with their quartiles, which is the figure to read. ``--pin`` runs Redis on CPU 0 and the
measured processes on CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

IGNORED = {"info", "config|resetstat", "hello", "select", "ping", "flushall"}


async def noop(n: int) -> None:
    """The task: nothing, so that only the library's own costs are measured."""


async def redis_counters(client: Any) -> tuple[float, int]:
    """The server's CPU seconds so far and its command count (commands in scripts too)."""
    cpu = await client.info("cpu")
    stats = await client.info("commandstats")
    calls = sum(
        int(v["calls"]) for k, v in stats.items() if k.removeprefix("cmdstat_") not in IGNORED
    )
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


async def serve(url: str, tasks: int) -> None:
    """Rounds on demand (one per line read from stdin) in one process and one shadow:
    the paired mode's child, free of the start-up and warm-up of a fresh process."""
    from shadows import Shadow

    loop = asyncio.get_running_loop()
    async with Shadow(name=f"cpu-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        await warm_up(shadow)
        print("ready", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(await measure(shadow, tasks)), flush=True)


async def warm_up(shadow: Any) -> None:
    """Scripts loaded, imports done, the first worker's one-off costs paid."""
    from shadows import Worker

    shadow.register(noop)
    await shadow.ensure_group()
    for n in range(20):
        await shadow.add(noop)(n)
    async with Worker(shadow, concurrency=10) as worker:
        await worker.run_until_finished()


async def measure(shadow: Any, tasks: int) -> dict[str, float]:
    """Add ``tasks`` one by one, then drain them with one worker at concurrency 10."""
    from shadows import Worker

    async def add_all() -> None:
        for n in range(tasks):
            await shadow.add(noop)(n)

    result = await phase(shadow.client, tasks, add_all, "add", "client")
    async with Worker(shadow, concurrency=10) as worker:
        result |= await phase(shadow.client, tasks, worker.run_until_finished, "drain", "worker")
    return result


async def phase(
    client: Any, tasks: int, work: Callable[[], Awaitable[Any]], name: str, process: str
) -> dict[str, float]:
    """The rate of ``work`` (``tasks`` tasks), this process's CPU per task, and the Redis
    server's CPU and commands per task over it."""
    redis_before, calls_before = await redis_counters(client)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await work()
    cpu_after, wall_after = time.process_time(), time.perf_counter()
    redis_after, calls_after = await redis_counters(client)
    return {
        f"{name}_per_s": tasks / (wall_after - wall_before),
        f"{name}_{process}_us": (cpu_after - cpu_before) / tasks * 1e6,
        f"{name}_redis_us": (redis_after - redis_before) / tasks * 1e6,
        f"{name}_commands": (calls_after - calls_before) / tasks,
    }


def version_option(parser: argparse.ArgumentParser) -> None:
    """``--version LABEL=PYTHON``, repeated: the versions to compare."""
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="a version to measure: a label and the python of its environment (repeat it;"
        " ratios are against the first)",
    )


def paired(rows: list[dict[str, float]], base: list[dict[str, float]], key: str) -> str:
    """The median of the round-by-round ratios (each round's rows ran back to back, so a
    change in load hits both) and their quartiles."""
    ratios = [row[key] / other[key] for row, other in zip(rows, base, strict=True)]
    if len(ratios) < 2:
        return f"{ratios[0]:.3f}"
    low, middle, high = statistics.quantiles(ratios, n=4)
    return f"{middle:.3f} ({low:.2f}-{high:.2f})"


def answer(child: subprocess.Popen[str]) -> str:
    """The next line a child prints (its rounds' figures, or ``ready``)."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise SystemExit(f"a measuring process ended (exit code {child.wait()})")
    return line.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on ``cpu`` only (``taskset``), or as it is."""
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def start_redis(
    directory: str, cpu: int | None = None, wrapper: tuple[str, ...] = (), wait: float = 10
) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server without persistence (run under ``wrapper``, a command such
    as Valgrind's, when given; its standard error is then piped) and its port."""
    port = free_port()
    server = shutil.which("redis-server") or "redis-server"
    options = ("--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory)
    process = subprocess.Popen(
        pinned([*wrapper, server, *options], cpu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if wrapper else subprocess.DEVNULL,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            process.poll()
            if process.returncode is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not accept connections within {wait} s")


def orchestrate(arguments: argparse.Namespace) -> None:
    versions: dict[str, str] = {}
    for pair in arguments.version:
        label, _, python = pair.partition("=")
        if not label or not python:
            raise SystemExit(f"--version takes LABEL=PYTHON, not {pair!r}")
        versions[label] = python
    if len(versions) < 2:
        raise SystemExit("give at least two --version LABEL=PYTHON to compare")
    rows: dict[str, list[dict[str, float]]] = {label: [] for label in versions}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_redis(directory, 0 if arguments.pin else None)
        children: dict[str, subprocess.Popen[str]] = {}
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for label, python in versions.items():
                command = [python, __file__, "--serve", "--url", url]
                command += ["--tasks", str(arguments.tasks)]
                children[label] = child = subprocess.Popen(
                    pinned(command, 1 if arguments.pin else None),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                if answer(child) != "ready":
                    raise SystemExit(f"{label} did not start")
            for round_number in range(arguments.rounds):
                # the order turns every round: neither version always goes first
                order = list(versions)[round_number % len(versions) :]
                order += list(versions)[: round_number % len(versions)]
                for label in order:
                    loads.append(os.getloadavg()[0])
                    child = children[label]
                    assert child.stdin is not None
                    child.stdin.write("round\n")
                    child.stdin.flush()
                    row = json.loads(answer(child))
                    rows[label].append(row)
                    print(round_number, label, json.dumps(row), flush=True)
        finally:
            for child in children.values():
                if child.stdin is not None:
                    child.stdin.close()
                child.wait(30)
            process.terminate()
            process.wait(10)
    loads.append(os.getloadavg()[0])
    first = next(iter(versions))
    print(f"\n{arguments.tasks} tasks, {arguments.rounds} rounds each, medians")
    print(f"load average (1 min) during the run: {min(loads):.2f}-{max(loads):.2f}")
    header = "".join(f"{label:>10}" for label in versions)
    others = list(versions)[1:]
    ratios = "".join(f"{label + '/' + first + ' (quartiles)':>22}" for label in others)
    print(f"{'measure':<34}{header}{ratios}")
    names = {
        "add_per_s": "add: tasks/s (wall)",
        "add_client_us": "add: producer CPU us/task",
        "add_redis_us": "add: Redis CPU us/task",
        "add_commands": "add: Redis commands/task",
        "drain_per_s": "drain c10: tasks/s (wall)",
        "drain_worker_us": "drain c10: worker CPU us/task",
        "drain_redis_us": "drain c10: Redis CPU us/task",
        "drain_commands": "drain c10: Redis commands/task",
    }
    for key, name in names.items():
        medians = {label: statistics.median(r[key] for r in rows[label]) for label in versions}
        cells = "".join(f"{value:>10.2f}" for value in medians.values())
        spread = "  ".join(
            f"{min(r[key] for r in rows[label]):.1f}-{max(r[key] for r in rows[label]):.1f}"
            for label in versions
        )
        shares = "".join(f"{paired(rows[label], rows[first], key):>22}" for label in others)
        print(f"{name:<34}{cells}{shares}   (range {spread})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    version_option(parser)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the Redis server on CPU 0 and the measured process on CPU 1 (taskset):"
        " far less spread between rounds on a machine with two or more cores",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.url, arguments.tasks))
    else:
        orchestrate(arguments)
