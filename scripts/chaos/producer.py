"""The one producer: schedules a seeded mix of tasks and writes down which adds Redis
accepted (``accepted.jsonl``) and which failed (``rejected.jsonl``).

An add is *accepted* when ``add(...)(...)`` returned without an error; only accepted tasks
must run. A rejected add may still have reached Redis (its reply was lost), so its task may
run too: such runs are counted, not flagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from shadows import Execution, ExecutionState, Shadow

from . import tasks

#: What the producer adds, with the share of each kind.
MIX: dict[str, float] = {
    "immediate": 0.30,
    "cancel": 0.04,
    "future": 0.18,
    "keyed": 0.11,
    "retry": 0.11,
    "limited": 0.09,
    "long": 0.07,
    "rated": 0.05,
    "debounced": 0.05,
}
CUSTOMERS = ("alice", "bob", "carol")
CHAINS = 3
#: Chains written by hand (each run adds or replaces its own key's successor).
RELAYS = 2
#: A keyed future task is at least this far out, so that adding its key again right away
#: must find it still scheduled (and do nothing).
KEYED_LEAD = 1.5
#: The share of debounced bursts that are long streams instead: a submission every
#: STREAM_GAP seconds (never DEBOUNCE_SETTLE of quiet) for longer than DEBOUNCE_MAX_WAIT,
#: so that max_wait, not the settle time, decides when their runs are due.
STREAM_SHARE = 0.3
STREAM_GAP = 0.12


class Producer:
    def __init__(
        self,
        shadow: Shadow,
        directory: Path,
        rng: random.Random,
        rate: float,
        redelivery_timeout: float,
    ) -> None:
        self.shadow = shadow
        self.directory = directory
        self.rng = rng
        self.rate = rate
        self.redelivery_timeout = redelivery_timeout
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._sequence = 0
        self._accepted_log = directory / "accepted.jsonl"
        self._rejected_log = directory / "rejected.jsonl"
        self._cancelled_log = directory / "cancelled.jsonl"
        #: Cancellations waiting for their task to start, and long debounced streams
        #: (awaited at the end).
        self._background: set[asyncio.Task[None]] = set()

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")

    def _next(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}-{self._sequence}"

    async def _add(
        self,
        kind: str,
        marker: str,
        when: datetime | None,
        adding: Awaitable[Execution],
        **facts: Any,
    ) -> Execution | None:
        sent = time.time()
        try:
            execution = await adding
        except (RedisError, OSError) as error:
            self.rejected[kind] += 1
            self._write(
                self._rejected_log,
                {
                    "kind": kind,
                    "marker": marker,
                    "sent": sent,
                    "t": time.time(),
                    "error": f"{type(error).__name__}: {error}"[:300],
                },
            )
            return None
        self.accepted[kind] += 1
        self._write(
            self._accepted_log,
            {
                "kind": kind,
                "marker": marker,
                "k": execution.key,
                "w": execution.when.timestamp(),
                "sent": sent,
                "t": time.time(),
                **facts,
            },
        )
        return execution

    def _in(self, seconds: float) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=seconds)

    async def add_chains(self) -> None:
        """Start the perpetual chains under fixed keys (before any fault)."""
        for index in range(CHAINS):
            key = f"chain-{index}"
            added = await self._add(
                "perpetual", key, None, self.shadow.add(tasks.chain, key=key)(50)
            )
            if added is None:
                raise RuntimeError(f"could not start the perpetual chain {key}")
        for index in range(RELAYS):
            key = f"relay-{index}"
            added = await self._add(
                "perpetual", key, None, self.shadow.add(tasks.relay, key=key)(50)
            )
            if added is None:
                raise RuntimeError(f"could not start the hand-written chain {key}")

    async def add_probes(self, count: int, delay: float) -> None:
        """Tasks due in ``delay`` seconds: work that is waiting when Redis comes back."""
        when = self._in(delay)
        for _ in range(count):
            marker = self._next("probe")
            adding = self.shadow.add(tasks.work, when=when, key=marker)(50, marker)
            await self._add("probe", marker, when, adding)

    async def add_poison(self) -> str | None:
        """A task that kills every worker that runs it; its key, if the add went through."""
        marker = self._next("poison")
        added = await self._add(
            "poison", marker, None, self.shadow.add(tasks.poison, key=marker)(marker)
        )
        return None if added is None else marker

    async def add_one(self) -> None:
        kinds = list(MIX)
        kind = self.rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
        rng = self.rng
        shadow = self.shadow
        if kind == "immediate":
            marker, ms = self._next("i"), rng.randint(20, 300)
            await self._add(kind, marker, None, shadow.add(tasks.work)(ms, marker))
        elif kind == "future":
            marker, ms, when = self._next("f"), rng.randint(20, 300), self._in(rng.uniform(0.2, 8))
            await self._add(kind, marker, when, shadow.add(tasks.work, when=when)(ms, marker))
        elif kind == "long":
            marker = self._next("l")
            ms = int(rng.uniform(1.5, 2.5) * self.redelivery_timeout * 1000)
            await self._add(kind, marker, None, shadow.add(tasks.work)(ms, marker))
        elif kind == "keyed":
            await self._add_keyed()
        elif kind == "rated":
            marker, ms = self._next("rated"), rng.randint(20, 100)
            await self._add(
                kind, marker, None, shadow.add(tasks.rated)(marker, ms),
                limit=tasks.RATE_LIMIT, per=tasks.RATE_PER,
            )  # fmt: skip
        elif kind == "debounced":
            await self._add_burst()
        elif kind == "cancel":
            key, ms = self._next("cancel"), rng.randint(1500, 3000)
            added = await self._add(kind, key, None, shadow.add(tasks.cancellable, key=key)(ms))
            if added is not None:
                self._in_background(self._cancel_when_running(added))
        elif kind == "retry":
            key, ms, fail_until = self._next("retry"), rng.randint(20, 200), rng.randint(0, 2)
            function = rng.choice([tasks.flaky, tasks.flaky_exponential])
            await self._add(
                kind, key, None, shadow.add(function, key=key)(ms, fail_until),
                fail_until=fail_until,
            )  # fmt: skip
        else:
            key, ms, customer = self._next("limited"), rng.randint(100, 600), rng.choice(CUSTOMERS)
            await self._add(
                kind, key, None, shadow.add(tasks.limited, key=key)(customer, ms),
                customer=customer,
            )  # fmt: skip

    async def _add_keyed(self) -> None:
        """A task under a custom key, now or later; a future one is added twice at once:
        the second add must be a no-op."""
        key, ms = self._next("key"), self.rng.randint(20, 300)
        when = self._in(self.rng.uniform(KEYED_LEAD, 8)) if self.rng.random() < 0.7 else None
        first = await self._add(
            "keyed", key, when, self.shadow.add(tasks.work, when=when, key=key)(ms, key)
        )
        if first is None or when is None:
            return
        duplicate = f"{key}-dup"
        await self._add(
            "keyed-again", duplicate, when,
            self.shadow.add(tasks.work, when=when, key=key)(ms, duplicate),
            first_when=when.timestamp(),
        )  # fmt: skip

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        running = asyncio.create_task(work)
        self._background.add(running)
        running.add_done_callback(self._background.discard)

    async def _add_burst(self) -> None:
        """A burst of 2 to 5 submissions of one debounced scope, 30 ms apart (well within
        the settle time): one run, with the last accepted submission's arguments. Or, for
        STREAM_SHARE of them, in the background, a stream of 6 to 10 submissions
        STREAM_GAP apart, which max_wait cuts into bursts: one run each, due within
        max_wait of its first submission."""
        burst = self._next("burst")
        if self.rng.random() < STREAM_SHARE:
            self._in_background(self._submit(burst, self.rng.randint(6, 10), STREAM_GAP))
        else:
            await self._submit(burst, self.rng.randint(2, 5), 0.03)

    async def _submit(self, burst: str, count: int, gap: float) -> None:
        for sequence in range(count):
            if sequence:
                await asyncio.sleep(gap)
            marker = f"{burst}:{sequence}"
            await self._add(
                "debounced", marker, None,
                self.shadow.add(tasks.debounced)(burst, sequence, marker),
                burst=burst, sequence=sequence, settle=tasks.DEBOUNCE_SETTLE,
                max_wait=tasks.DEBOUNCE_MAX_WAIT,
            )  # fmt: skip

    async def _cancel_when_running(self, execution: Execution) -> None:
        """Cancel ``execution`` once a worker runs it; write down when the cancellation
        took effect (``cancel()`` returned ``True``: revoked or removed for good)."""
        try:
            async with asyncio.timeout(20):
                async for event in execution.subscribe():
                    if event.state is ExecutionState.RUNNING:
                        break
                    if event.state.final:
                        return
            sent = time.time()
            done = await self.shadow.cancel(execution.key)
        except (RedisError, OSError, TimeoutError) as error:
            self._write(self._cancelled_log, {"k": execution.key, "error": str(error)[:300]})
            return
        self._write(self._cancelled_log, {"k": execution.key, "sent": sent, "t": time.time(),
                                          "cancelled": done})  # fmt: skip

    async def finish(self) -> None:
        """Wait for the cancellations still waiting for their task to start and the
        debounced streams still submitting."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Add tasks at ``rate`` per second until ``stop`` (slower while Redis is away)."""
        interval = 1 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            await self.add_one()
            next_at = max(next_at + interval, time.monotonic() - interval)
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
