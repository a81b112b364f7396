"""How long ``Shadow.snapshot()`` takes over many future tasks.

    python scripts/benchmarks/snapshot.py --url redis://localhost:6379/15 --tasks 100000

Fills a fresh shadow with future tasks (one added through the API, cloned inside Redis,
which is much faster than adding them one by one), times a few snapshots with and without
arguments, prints the figures and removes the tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from shadows import Shadow

# ARGV: key prefix, first index, last index, due time of task-0 (ms)
CLONE = """
local prefix, first, last, due = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local fields = redis.call('HGETALL', prefix .. 'parked:task-0')
local record = redis.call('HGETALL', prefix .. 'run:task-0')
for i = first, last do
  local key = 'task-' .. i
  for j = 1, #fields, 2 do
    if fields[j] == 'key' then fields[j + 1] = key end
  end
  redis.call('HSET', prefix .. 'parked:' .. key, unpack(fields))
  redis.call('HSET', prefix .. 'run:' .. key, unpack(record))
  redis.call('ZADD', KEYS[1], tonumber(due) + i, key)
end
return redis.call('ZCARD', KEYS[1])
"""


async def fill(shadow: Shadow, count: int) -> None:
    await shadow.add("trace", when=datetime.now(UTC) + timedelta(days=1), key="task-0")("hi")
    score = int(await shadow.client.zscore(shadow.keys.queue, "task-0") or 0)
    clone = shadow.client.register_script(CLONE)
    for first in range(1, count, 10_000):  # in slices, to keep Redis responsive
        last = min(first + 9_999, count - 1)
        await clone(keys=[shadow.keys.queue], args=[shadow.keys.prefix, first, last, score])


async def main(url: str, count: int, runs: int) -> None:
    async with Shadow(name=f"bench-snapshot-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        try:
            began = time.perf_counter()
            await fill(shadow, count)
            print(f"filled {count:,} future tasks in {time.perf_counter() - began:.1f} s")
            for arguments in (False, True):
                timings = []
                for _ in range(runs):
                    began = time.perf_counter()
                    snapshot = await shadow.snapshot(arguments=arguments)
                    timings.append(time.perf_counter() - began)
                    assert snapshot.total_tasks == count, snapshot.total_tasks
                print(
                    f"snapshot(arguments={arguments}): best {min(timings):.3f} s, "
                    f"median {statistics.median(timings):.3f} s "
                    f"({', '.join(f'{t:.3f}' for t in timings)})"
                )
        finally:
            await shadow.clear()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://localhost:6379/15")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    asyncio.run(main(options.url, options.tasks, options.runs))
