"""Redis commands per task, from Redis's own counters (INFO commandstats).

    python scripts/benchmarks/commands_per_task.py --url redis://localhost:6379/15

Three workloads on a fresh shadow: adding tasks one by one; one worker draining them at
concurrency 10; and an idle worker receiving one task every 5 ms (the latency path, with
the add and the worker's background loops included). Commands run inside a Lua script
are counted by Redis under their own names as well as the script call (EVALSHA), so the
round trips are the EVALSHA, XREADGROUP-outside-scripts and CLIENT calls; the other
names are the work Redis does. The counters are server-wide: use a Redis nobody else is
using while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from typing import Any

from shadows import Shadow, Worker

IGNORED = {"info", "config|resetstat", "hello", "select", "ping"}
#: The commands the drain's scripts run (START, COMPLETE); outside them a drain only
#: reads (XREADGROUP), so "their commands" leaves the scripts' own Lua time apart.
INSIDE_SCRIPTS = {
    "hmget",
    "hset",
    "hget",
    "hdel",
    "expire",
    "exists",
    "xpending",
    "xack",
    "xdel",
    "xclaim",
    "publish",
}


async def noop(n: int) -> None:
    """The task: nothing, so that only the library's own commands are counted."""


Counters = dict[str, tuple[int, int]]


async def counters(shadow: Shadow) -> Counters:
    """Per command: its calls and the microseconds Redis spent in them."""
    info: dict[str, Any] = await shadow.client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()
    }


def per_task(before: Counters, after: Counters, tasks: int) -> str:
    """Commands per task, then the Redis time per task of the round trips (a script's
    time includes the commands it runs) and of the commands scripts run."""
    calls = {name: after[name][0] - before.get(name, (0, 0))[0] for name in after}
    calls = {name: n for name, n in calls.items() if n and name not in IGNORED}
    total = sum(calls.values())
    ranked = sorted(calls.items(), key=lambda item: -item[1])
    parts = ", ".join(f"{name} {n / tasks:.2f}" for name, n in ranked if n / tasks >= 0.005)
    usec = {name: after[name][1] - before.get(name, (0, 0))[1] for name in calls}
    scripts = sum(n for name, n in usec.items() if name.startswith("eval"))
    inside = sum(n for name, n in usec.items() if name in INSIDE_SCRIPTS)
    other = sum(usec.values()) - scripts - inside
    return (
        f"{total / tasks:.2f} commands per task: {parts}\n"
        f"{'':19}Redis time per task: scripts {scripts / tasks:.1f} µs (their commands "
        f"{inside / tasks:.1f} µs), other calls {other / tasks:.1f} µs"
    )


async def main(url: str, tasks: int, paced: int) -> None:
    async with Shadow(name=f"commands-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        shadow.register(noop)
        await shadow.ensure_group()
        before = await counters(shadow)
        for n in range(tasks):
            await shadow.add(noop)(n)
        print("add one by one:   ", per_task(before, await counters(shadow), tasks))

        async with Worker(shadow, concurrency=10) as worker:
            before = await counters(shadow)
            await worker.run_until_finished()
            print("drain c10:        ", per_task(before, await counters(shadow), tasks))

        async with Worker(shadow, concurrency=10) as worker:
            running = asyncio.create_task(worker.run_forever())
            await asyncio.sleep(1)
            before = await counters(shadow)
            for n in range(paced):
                await shadow.add(noop)(n)
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.5)
            after = await counters(shadow)
            worker.stop()
            await running
            print("idle, every 5 ms: ", per_task(before, after, paced))
        await shadow.clear()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://localhost:6379/15")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--paced", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.tasks, arguments.paced))
