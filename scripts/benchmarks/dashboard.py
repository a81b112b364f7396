"""The dashboard's two costs: serving the scheduled list of a big queue, and reading Redis.

    python scripts/benchmarks/dashboard.py --url redis://localhost:6379/15

Fills a fresh shadow with 100,000 future tasks, serves the dashboard with uvicorn on a
local port and times real HTTP requests (page rendering included) for pages of the
scheduled list: the first, the middle and the last page, random pages, and searches (a
task name, a key near the end of the queue, a text nothing matches, which walks the whole
queue). Then it counts, with INFO commandstats, the Redis commands the dashboard's
poller costs per second with one and with ten open event streams. The counters are
server-wide: use a Redis nobody else is using while it runs. Figures, not a pass/fail
test: see docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from shadows import Shadow
from shadows.core.execution import now_ms
from shadows.core.keys import WORKER_GROUP
from shadows.dashboard import Dashboard, DashboardSettings
from shadows.operations.registry import Presence, beat


async def remind(customer: int) -> None:
    """The scheduled task (never run here)."""


async def audit(customer: int) -> None:
    """A rarer one, to search for."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def fill(shadow: Shadow, count: int) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    async with shadow.batch(size=1000) as batch:
        for n in range(count):
            task = audit if n % 1000 == 0 else remind
            batch.add(task, when=start + timedelta(seconds=n), key=f"task-{n:06d}")(n)


async def timed(client: httpx.AsyncClient, path: str) -> tuple[float, str]:
    began = time.perf_counter()
    response = await client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return elapsed, response.text


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"{name:<34} median {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   "
        f"max {ordered[-1]:6.1f} ms   ({len(ordered)} requests)"
    )


async def pages(client: httpx.AsyncClient, count: int, size: int, repeat: int) -> None:
    last = ((count - 1) // size) * size
    fixed = {
        "first page": "/scheduled",
        "middle page": f"/scheduled?start={count // 2}",
        "last page": f"/scheduled?start={last}",
        "task name (1 in 1,000)": "/scheduled?task=audit",
        "key near the end": f"/scheduled?q=task-{count - 10:06d}",
        "text nothing matches": "/scheduled?q=no-such-key",
    }
    for name, path in fixed.items():
        await timed(client, path)  # warm
        print(summary(name, [(await timed(client, path))[0] for _ in range(repeat)]))
    randoms = [
        (await timed(client, f"/scheduled?start={random.randrange(0, last + 1, size)}"))[0]
        for _ in range(repeat * 5)
    ]
    print(summary("random pages", randoms))


async def pretend_busy(shadow: Shadow, workers: int, running: int) -> None:
    """The registry entries and stream deliveries of ``workers`` workers running ``running``
    tasks, written directly, so that no live worker adds commands of its own."""
    now = now_ms()
    for n in range(workers):
        presence = Presence(f"worker-{n}", 10, running // workers, now, ["remind", "audit"])
        await beat(shadow, presence, 3_600_000, now)
    await shadow.ensure_group()
    for n in range(running):
        await shadow.add(remind, key=f"running-{n}")(n)
    for n in range(workers):
        await shadow.client.xreadgroup(
            WORKER_GROUP, f"worker-{n}", {shadow.keys.stream: ">"}, count=running // workers
        )


async def counters(shadow: Shadow) -> tuple[int, int]:
    info: dict[str, Any] = await shadow.client.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in info.items() if k != "cmdstat_info")
    micros = sum(int(v["usec"]) for k, v in info.items() if k != "cmdstat_info")
    return calls, micros


async def cost(shadow: Shadow, base: str, listeners: int, seconds: float) -> None:
    async with httpx.AsyncClient(timeout=None) as client:

        async def listen() -> None:
            async with client.stream("GET", f"{base}/events") as response:
                async for _ in response.aiter_lines():
                    pass

        streams = [asyncio.create_task(listen()) for _ in range(listeners)]
        await asyncio.sleep(1)
        calls, micros = await counters(shadow)
        await asyncio.sleep(seconds)
        after_calls, after_micros = await counters(shadow)
        for stream in streams:
            stream.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    rate = (after_calls - calls) / seconds
    busy = (after_micros - micros) / seconds / 1000
    print(
        f"{listeners:>2} event stream(s): {rate:6.1f} commands/s (script calls and the "
        f"commands they run), Redis busy {busy:.2f} ms/s"
    )


async def main(url: str, count: int, repeat: int, seconds: float) -> None:
    name = f"dashboard-{uuid.uuid4().hex[:8]}"
    async with Shadow(name=name, url=url) as shadow:
        shadow.register(remind)
        shadow.register(audit)
        began = time.perf_counter()
        await fill(shadow, count)
        print(f"{count:,} scheduled tasks written in {time.perf_counter() - began:.1f} s")
        settings = DashboardSettings.load(config=None, poll_interval="1s")
        dashboard = Dashboard(settings, shadow=shadow)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(dashboard, port=port, log_config=None, access_log=False)
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if serving.done():
                    serving.result()  # it failed to start: say why
                await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                await pages(client, count, settings.page_size, repeat)
            print("Idle (no worker, the 100,000 future tasks only counted):")
            for listeners in (1, 10):
                await cost(shadow, base, listeners, seconds)
            await pretend_busy(shadow, workers=10, running=100)
            print("Busy (10 workers running 100 tasks):")
            for listeners in (1, 10):
                await cost(shadow, base, listeners, seconds)
        finally:
            server.should_exit = True
            await serving
            await shadow.clear()
            keys = [key async for key in shadow.client.scan_iter(f"{shadow.keys.prefix}*")]
            if keys:
                await shadow.client.delete(*keys)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://localhost:6379/15")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.tasks, arguments.repeat, arguments.seconds))
