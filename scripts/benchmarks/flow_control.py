"""What flow control costs per task: a row per behaviour, and the task declaring none.

    python scripts/benchmarks/flow_control.py [--tasks 10000] [--repeat 3] [--url URL]
    python scripts/benchmarks/flow_control.py --compare ../other-checkout [--repeat 7]

Each row enqueues ``--tasks`` calls one by one (one awaited ``add`` each: ``enqueue /s``),
then one worker in this process (concurrency 100, logging at WARNING) runs them all
(``drain /s``, from the worker's start until nothing is left). Every cell is the median
of ``--repeat`` runs, each on a fresh shadow of a private redis-server (no persistence;
``--url`` uses a running one instead, on keys of their own).

Rows: ``none`` (a no-op task declaring nothing: the cost every task pays),
``ConcurrencyLimit`` (for reference), ``Cooldown`` and ``RateLimit`` (never over their
limit: each run pays the worker's gate, one script call), ``Debounce`` (every submission
its own scope: each opens a burst, due 1 ms later, so the drain also moves them from the
queue) and ``Debounce, one burst`` (every submission joins one burst: enqueue only).

``--hooks`` times, in isolation, what flow control adds to a task declaring none of it:
the producer's look for a ``Debounce`` on every add, the worker's look for a ``Cooldown``
and ``RateLimit`` before every run (microseconds per task).

``--compare PATH`` runs only the ``none`` row, alternately with this tree's ``shadows``
and with the one under ``PATH`` (another checkout, e.g. ``git worktree add /tmp/before
<commit>``), and prints both medians and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ROWS = ["none", "ConcurrencyLimit", "Cooldown", "RateLimit", "Debounce", "Debounce, one burst"]


async def noop(n: int) -> None:
    pass


def tasks() -> dict[str, Callable[..., Any]]:
    """The task of each row (the behaviours are imported only here: ``--compare`` may
    run the ``none`` row with a ``shadows`` that has none of them)."""
    from shadows import ConcurrencyLimit, Cooldown, Debounce, RateLimit

    async def limited(n: int, limit: ConcurrencyLimit = ConcurrencyLimit(max_concurrent=1000)):
        pass

    async def cooled(n: int, cooldown: Cooldown = Cooldown(timedelta(milliseconds=1), "n")):
        pass

    async def rated(n: int, rate: RateLimit = RateLimit(10**9, per=timedelta(seconds=1))):
        pass

    async def debounced(
        n: int, debounce: Debounce = Debounce(timedelta(milliseconds=1), scope="n")
    ):
        pass

    async def collapsed(n: int, debounce: Debounce = Debounce(timedelta(hours=1))):
        pass

    return {
        "none": noop,
        "ConcurrencyLimit": limited,
        "Cooldown": cooled,
        "RateLimit": rated,
        "Debounce": debounced,
        "Debounce, one burst": collapsed,
    }


async def measure(url: str, row: str, count: int) -> dict[str, float | None]:
    """``enqueue`` and ``drain`` in tasks per second for one row (drain ``None`` for the
    collapsing debounce: its one run says nothing)."""
    from shadows import Shadow, Worker

    task = noop if row == "none" else tasks()[row]
    logging.getLogger("shadows").setLevel(logging.WARNING)
    async with Shadow(name=f"flow-bench-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        shadow.register(task)
        add = shadow.add(task)
        started = time.perf_counter()
        for n in range(count):
            await add(n)
        enqueue = count / (time.perf_counter() - started)
        drain = None
        if row != "Debounce, one burst":
            started = time.perf_counter()
            async with Worker(
                shadow, concurrency=100, scheduling_resolution=timedelta(milliseconds=10)
            ) as worker:
                await worker.run_until_finished()
            drain = count / (time.perf_counter() - started)
        keys = [key async for key in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")]
        for at in range(0, len(keys), 1000):
            await shadow.client.delete(*keys[at : at + 1000])
    return {"enqueue": enqueue, "drain": drain}


def hooks(count: int) -> tuple[float, float]:
    """Microseconds per task: (the producer's check, the worker's check)."""
    from shadows import Cooldown, Debounce, RateLimit
    from shadows.behaviours import plan_for

    def producer(checked: bool) -> float:
        started = time.perf_counter()
        if checked:
            for _ in range(count):
                if plan_for(noop).find(Debounce) is not None:
                    raise AssertionError
        else:
            for _ in range(count):
                pass
        return time.perf_counter() - started

    plan = plan_for(noop)

    def worker(checked: bool) -> float:
        started = time.perf_counter()
        if checked:
            for _ in range(count):
                cooldown, rates = plan.find(Cooldown), plan.all(RateLimit)
                if cooldown is not None or rates:
                    raise AssertionError
        else:
            for _ in range(count):
                pass
        return time.perf_counter() - started

    def cost(side: Callable[[bool], float]) -> float:
        bare = min(side(False) for _ in range(7))
        checked = min(side(True) for _ in range(7))
        return (checked - bare) / count * 1e6

    return cost(producer), cost(worker)


def _one(url: str, row: str, count: int, pythonpath: str | None) -> dict[str, Any]:
    """One measurement in a fresh process (with ``shadows`` from ``pythonpath``)."""
    environment = dict(os.environ)
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath
    command = [sys.executable, __file__, "--one", row, "--url", url, "--tasks", str(count)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode:
        raise SystemExit(f"{row} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.splitlines()[-1]))


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def table(url: str, count: int, repeat: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    for _ in range(repeat):  # interleaved: a busy moment of the machine hits every row
        for row in ROWS:
            results[row].append(_one(url, row, count, None))
    base = {k: _median([r[k] for r in results["none"]]) for k in ("enqueue", "drain")}
    print(f"{count} tasks, median of {repeat}\n")
    print("| row | enqueue /s | vs none | drain /s | vs none |")
    print("|---|---|---|---|---|")
    for row in ROWS:
        cells = []
        for kind in ("enqueue", "drain"):
            value = _median([r[kind] for r in results[row]])
            reference = base[kind]
            ratio = f"{value / reference:.2f}" if value and reference else "n/a"
            cells += [_cell(value), ratio]
        print(f"| {row} | " + " | ".join(cells) + " |")


def compare(url: str, count: int, repeat: int, other: Path) -> None:
    trees = {"this tree": str(ROOT), str(other): str(other)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for _ in range(repeat):
        for name, path in trees.items():
            results[name].append(_one(url, "none", count, path))
    medians = {
        name: {k: _median([r[k] for r in runs]) for k in ("enqueue", "drain")}
        for name, runs in results.items()
    }
    print(f"a task declaring nothing, {count} tasks, median of {repeat} (interleaved)\n")
    print("| shadows | enqueue /s | drain /s |")
    print("|---|---|---|")
    for name, figures in medians.items():
        print(f"| {name} | {_cell(figures['enqueue'])} | {_cell(figures['drain'])} |")
    this, that = medians["this tree"], medians[str(other)]
    for kind in ("enqueue", "drain"):
        a, b = this[kind], that[kind]
        if a and b:
            print(f"{kind}: this tree {100 * (a / b - 1):+.1f} %")
    print("\nevery run:", json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=None, help="a running Redis (default: a private one)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout")
    parser.add_argument("--hooks", action="store_true", help="time the checks alone")
    parser.add_argument("--one", choices=ROWS, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.hooks:
        producer, worker = hooks(200_000)
        print(f"a task declaring none: {producer:.3f} us per add, {worker:.3f} us per run")
        return
    if arguments.one:
        print(json.dumps(asyncio.run(measure(arguments.url, arguments.one, arguments.tasks))))
        return
    sys.path.insert(0, str(HERE))
    from run import private_redis

    if arguments.url:
        run(arguments, arguments.url)
        return
    with private_redis() as url:
        run(arguments, url)


def run(arguments: argparse.Namespace, url: str) -> None:
    if arguments.compare:
        compare(url, arguments.tasks, arguments.repeat, arguments.compare.resolve())
    else:
        table(url, arguments.tasks, arguments.repeat)


if __name__ == "__main__":
    main()
