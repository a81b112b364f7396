"""The fault injector: kills, stops and restarts workers, restarts and pauses Redis.

Faults come one after another at seeded random intervals; a SIGTERMed worker is waited for
and replaced in the background, so stops overlap with later faults (a worker may be
draining while Redis restarts or is paused). Every fault is written to ``faults.jsonl``
with its timing, which the verifier uses to measure how fast work resumes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shadows.core.keys import WORKER_GROUP, Keys

from .producer import Producer
from .servers import RedisProcess
from .workers import WorkerPool

#: Fault kinds and how often each is picked after every kind has had its turn.
KINDS: dict[str, float] = {
    "worker_sigkill": 0.28,
    "worker_sigterm": 0.20,
    "redis_restart_sigterm": 0.13,
    "redis_restart_sigkill": 0.13,
    # paused past the clients' socket timeout: their commands fail, they reconnect
    "redis_pause_long": 0.14,
    # paused around the redelivery timeout (commands just wait): fencing must still act
    "redis_pause_short": 0.12,
    # SIGKILL, then a new worker under exactly the same name (a container keeps its
    # hostname and PID 1): it takes its predecessor's pending messages back itself
    "worker_restart_same_name": 0.08,
    # a task that kills every worker that runs it: dead-lettered after the delivery limit
    "poison_task": 0.03,
}


class FaultInjector:
    def __init__(
        self,
        directory: Path,
        pool: WorkerPool,
        server: RedisProcess,
        producer: Producer,
        monitor: Redis,
        shards: list[Keys],
        rng: random.Random,
        interval: tuple[float, float],
        pause_seconds: tuple[float, float],
        redelivery_timeout: float,
    ) -> None:
        self.pool = pool
        self.server = server
        self.producer = producer
        self.monitor = monitor
        self.shards = shards
        self.rng = rng
        self.interval = interval
        self.pause_seconds = pause_seconds
        self.short_pause_seconds = (0.5 * redelivery_timeout, 1.5 * redelivery_timeout)
        self.journal = directory / "faults.jsonl"
        self.counts: Counter[str] = Counter()
        self._plan: list[str] = list(KINDS)
        rng.shuffle(self._plan)

    def _note(self, record: dict[str, Any]) -> None:
        self.counts[record["kind"]] += 1
        with open(self.journal, "a") as file:
            file.write(json.dumps(record) + "\n")

    def _pick(self) -> str:
        """Every kind once (in a seeded order), then by weight."""
        if self._plan:
            return self._plan.pop()
        kinds = list(KINDS)
        return self.rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]

    async def run(self, deadline: float) -> None:
        """Inject faults until the ``time.monotonic()`` deadline."""
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "worker_sigkill": self.worker_sigkill,
            "worker_sigterm": self.worker_sigterm,
            "redis_restart_sigterm": lambda: self.redis_restart(kill=False),
            "redis_restart_sigkill": lambda: self.redis_restart(kill=True),
            "redis_pause_long": lambda: self.redis_pause("redis_pause_long", self.pause_seconds),
            "redis_pause_short": lambda: self.redis_pause(
                "redis_pause_short", self.short_pause_seconds
            ),
            "worker_restart_same_name": self.worker_restart_same_name,
            "poison_task": self.poison_task,
        }
        while True:
            wait = self.rng.uniform(*self.interval)
            if time.monotonic() + wait >= deadline:
                return
            await asyncio.sleep(wait)
            kind = self._pick()
            counted = self.counts[kind]
            await actions[kind]()
            if self.counts[kind] == counted and kind not in self._plan:
                self._plan.append(kind)  # skipped (no worker to hit): its turn comes again

    async def worker_sigkill(self) -> None:
        candidates = self.pool.candidates()
        if not candidates:
            return
        slot = self.rng.choice(candidates)
        fresh = self.rng.random() < 0.5
        started = time.time()
        details = await self.pool.kill(slot, fresh)
        self._note({"kind": "worker_sigkill", "t0": started, "t1": time.time(),
                    "fresh_name": fresh, **details})  # fmt: skip

    async def worker_restart_same_name(self) -> None:
        candidates = self.pool.candidates()
        if not candidates:
            return
        slot = self.rng.choice(candidates)
        started = time.time()
        details = await self.pool.kill(slot, fresh_name=False, same_name=True)
        self._note({"kind": "worker_restart_same_name", "t0": started, "t1": time.time(),
                    "fresh_name": False, **details})  # fmt: skip

    async def poison_task(self) -> None:
        """Add a task that kills its worker; the pool restarts each worker it kills under
        the same name (journaled as ``died``, which the verifier pins on the task)."""
        started = time.time()
        key = await self.producer.add_poison()
        if key is not None:
            self._note({"kind": "poison_task", "t0": started, "t1": time.time(), "key": key})

    async def worker_sigterm(self, during: str = "") -> None:
        candidates = self.pool.candidates(started=True)
        if not candidates:
            return
        slot = self.rng.choice(candidates)
        fresh = self.rng.random() < 0.5
        started = time.time()
        details = self.pool.terminate(slot, fresh)
        self._note({"kind": "worker_sigterm", "t0": started, "t1": time.time(),
                    "fresh_name": fresh, "during": during, **details})  # fmt: skip

    async def _waiting_work(self) -> int | None:
        """Tasks due but not running: undelivered stream entries plus due queue entries,
        in every shard."""
        for _ in range(3):  # the first try may meet the connection of the old server
            try:
                async with self.monitor.pipeline(transaction=False) as pipe:
                    for keys in self.shards:
                        pipe.xlen(keys.stream)
                        pipe.zcount(keys.queue, "-inf", int(time.time() * 1000))
                    counts = await pipe.execute()
                    pending = 0
                    for keys in self.shards:
                        if await self.monitor.exists(keys.stream):
                            found = await self.monitor.xpending(keys.stream, WORKER_GROUP)
                            pending += int(found["pending"])
            except RedisError:
                continue
            return sum(int(count) for count in counts) - pending
        return None

    async def redis_restart(self, kill: bool) -> None:
        """Stop Redis (SIGTERM or SIGKILL), keep it down a moment, start it again.

        Just before, a few probe tasks are added, due while Redis is down: work that waits
        for the workers when Redis answers again.
        """
        await self.producer.add_probes(4, 0.3)
        started = time.time()
        await asyncio.to_thread(self.server.stop, kill)
        down = time.time()
        if self.rng.random() < 0.3:
            # a worker stopped while Redis is away: it must still exit cleanly
            await self.worker_sigterm(during="redis_down")
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        await asyncio.to_thread(self.server.start, 30.0)
        ready = time.time()
        waiting = await self._waiting_work()
        kind = "redis_restart_sigkill" if kill else "redis_restart_sigterm"
        self._note({"kind": kind, "t0": started, "down": down, "ready": ready,
                    "t1": time.time(), "waiting_at_ready": waiting})  # fmt: skip

    async def redis_pause(self, kind: str, between: tuple[float, float]) -> None:
        """SIGSTOP Redis for a while (seconds drawn from ``between``), then SIGCONT."""
        seconds = self.rng.uniform(*between)
        started = time.time()
        self.server.pause()
        if self.rng.random() < 0.4:
            await asyncio.sleep(seconds / 2)
            await self.worker_sigterm(during="redis_paused")
            await asyncio.sleep(seconds / 2)
        else:
            await asyncio.sleep(seconds)
        self.server.resume()
        resumed = time.time()
        waiting = await self._waiting_work()
        self._note({"kind": kind, "t0": started, "ready": resumed, "seconds": seconds,
                    "t1": time.time(), "waiting_at_ready": waiting})  # fmt: skip
