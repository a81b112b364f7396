"""The side of the benchmark that runs inside one library's virtual environment.

    python harness.py LIB info
    python harness.py LIB produce --url URL --mode single|batch|paced|at --count N
    python harness.py LIB worker --url URL --concurrency C [--scheduling]

``info`` and ``produce`` print one JSON object on stdout. ``worker`` imports everything,
prints ``READY``, waits for a line on stdin, then runs the library's worker until it is
killed; every task it runs is recorded to Redis by :mod:`recorder`. Started by run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import sys
import time
from typing import Any

from adapters.base import Adapter, Unsupported


def load(library: str) -> Adapter:
    module = importlib.import_module(f"adapters.{library}")
    adapter: Adapter = module.ADAPTER
    return adapter


def info(adapter: Adapter) -> dict[str, Any]:
    return {
        "library": adapter.name,
        "version": adapter.version(),
        "python": sys.version.split()[0],
        "batch": adapter.batch_support(),
        "schedule": adapter.schedule_support(),
        "notes": list(adapter.notes),
    }


async def produce(adapter: Adapter, arguments: argparse.Namespace) -> dict[str, Any]:
    producer = await adapter.open_producer(arguments.url)
    count: int = arguments.count
    first: int = arguments.first
    numbers = list(range(first, first + count))
    result: dict[str, Any] = {"count": count}
    try:
        if arguments.mode == "single":
            started = time.perf_counter()
            for n in numbers:
                await producer.send(n)
            result["seconds"] = time.perf_counter() - started
        elif arguments.mode == "declared":
            started = time.perf_counter()
            for n in numbers:
                await producer.send_declared(n)
            result["seconds"] = time.perf_counter() - started
        elif arguments.mode == "batch":
            started = time.perf_counter()
            await producer.send_many(numbers)
            result["seconds"] = time.perf_counter() - started
        elif arguments.mode == "paced":
            # One task at a time, spaced out so that the worker is idle when each arrives.
            sent: list[float] = []
            next_at = time.perf_counter()
            for n in numbers:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent.append(time.time())
                await producer.send(n)
                next_at += arguments.interval
            result["sent"] = sent
        elif arguments.mode == "at":
            # All for the same whole second, at least --lead seconds from now.
            target = float(math.ceil(time.time() + arguments.lead))
            result["target"] = target
            started = time.perf_counter()
            for n in numbers:
                await producer.send_at(n, target)
            result["seconds"] = time.perf_counter() - started
            result["finished"] = time.time()
    except Unsupported as reason:
        result["unsupported"] = str(reason)
    finally:
        await producer.close()
    return result


def worker(adapter: Adapter, arguments: argparse.Namespace) -> None:
    import recorder

    print("READY", flush=True)
    sys.stdin.readline()
    # From here on, anything the library prints goes to the log, not the protocol.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    recorder.start_shipping(arguments.url)
    adapter.run_worker(arguments.url, arguments.concurrency, arguments.scheduling)
    raise SystemExit(f"{adapter.name}: the worker returned on its own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("library")
    parser.add_argument("role", choices=["info", "produce", "worker"])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/10")
    parser.add_argument(
        "--mode", choices=["single", "declared", "batch", "paced", "at"], default="single"
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0, help="number of the first task")
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--lead", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--scheduling", action="store_true")
    arguments = parser.parse_args()
    adapter = load(arguments.library)
    if arguments.role == "info":
        print(json.dumps(info(adapter)))
    elif arguments.role == "produce":
        print(json.dumps(asyncio.run(produce(adapter, arguments))))
    else:
        worker(adapter, arguments)


if __name__ == "__main__":
    main()
