"""A first throughput figure for shadows alone (the suite beside the peers is separate).

    python scripts/benchmarks/throughput.py --url redis://localhost:6379/15 --tasks 10000

Measures: enqueueing N no-op tasks one by one (one await per add), then one worker in
this process draining them at concurrency 10 and 100. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

from shadows import Shadow, Worker


async def noop() -> None:
    pass


async def enqueue(shadow: Shadow, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await shadow.add(noop)()
    return time.perf_counter() - started


async def drain(shadow: Shadow, concurrency: int) -> float:
    started = time.perf_counter()
    async with Worker(shadow, concurrency=concurrency) as worker:
        await worker.run_until_finished()
    return time.perf_counter() - started


async def main(url: str, count: int) -> None:
    logging.getLogger("shadows").setLevel(logging.WARNING)
    for concurrency in (10, 100):
        async with Shadow(name=f"bench-{uuid.uuid4().hex[:8]}", url=url) as shadow:
            seconds = await enqueue(shadow, count)
            print(
                f"enqueue one by one: {count} tasks in {seconds:.2f} s = {count / seconds:,.0f}/s"
            )
            seconds = await drain(shadow, concurrency)
            print(
                f"drain at concurrency {concurrency}: {count} tasks in {seconds:.2f} s "
                f"= {count / seconds:,.0f}/s"
            )
            await shadow.client.delete(shadow.keys.stream)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="redis://localhost:6379/15")
    parser.add_argument("--tasks", type=int, default=10_000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.tasks))
