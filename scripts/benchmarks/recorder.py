"""Runs inside each worker process: every task notes (n, start time); a thread ships them.

Each task body is ``record(n)``: one list append, so the work measured is the library's
own. A daemon thread pushes what was recorded to the Redis list ``bench:done`` every
20 ms as ``"n time pid"`` strings; the orchestrator reads that list to know when all tasks
ran, which ran twice, and when each started.
"""

from __future__ import annotations

import os
import threading
import time

DONE_KEY = "bench:done"

_records: list[tuple[int, float]] = []


def record(n: int) -> None:
    """Called first thing by the benchmark's no-op task."""
    _records.append((n, time.time()))


def start_shipping(url: str, interval: float = 0.02) -> threading.Thread:
    """Start the daemon thread that copies the records to Redis."""
    import redis

    client = redis.Redis.from_url(url)
    client.ping()
    pid = os.getpid()

    def ship() -> None:
        shipped = 0
        while True:
            time.sleep(interval)
            batch = _records[shipped:]
            if not batch:
                continue
            try:
                client.rpush(DONE_KEY, *(f"{n} {at:.6f} {pid}" for n, at in batch))
            except redis.RedisError:
                continue  # try again with the same records next time
            shipped += len(batch)

    thread = threading.Thread(target=ship, name="bench-recorder", daemon=True)
    thread.start()
    return thread
