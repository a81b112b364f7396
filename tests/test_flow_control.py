"""Flow control: ``Cooldown``, ``RateLimit`` and ``Debounce``, alone, with several
workers and producers at once, and combined with each other and ``ConcurrencyLimit``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from shadows import (
    ConcurrencyLimit,
    Cooldown,
    CurrentExecution,
    Debounce,
    Execution,
    RateLimit,
    Retry,
    Shadow,
    Worker,
)
from shadows.core.functions import task_name

FAST = timedelta(milliseconds=10)
HOUR = timedelta(hours=1)


def worker(shadow: Shadow, name: str = "", **options: Any) -> Worker:
    if name:
        options["name"] = name
    return Worker(shadow, scheduling_resolution=FAST, **options)


async def run_workers(shadow: Shadow, count: int, concurrency: int = 10) -> None:
    workers = [worker(shadow, f"flow-{i}", concurrency=concurrency) for i in range(count)]
    await asyncio.wait_for(asyncio.gather(*(w.run_until_finished() for w in workers)), 60)


def busiest_window(starts: list[float], per: float) -> int:
    """The most starts within any window of ``per`` seconds (half open)."""
    starts = sorted(starts)
    most, first = 0, 0
    for last, moment in enumerate(starts):
        while moment - starts[first] >= per:
            first += 1
        most = max(most, last - first + 1)
    return most


async def states(shadow: Shadow, keys: list[str]) -> Counter[str | None]:
    return Counter([await shadow.task_state(key) for key in keys])


# -- Cooldown ------------------------------------------------------------------------


async def test_a_cooldown_drops_the_runs_after_the_first_across_three_workers(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    async def refresh(n: int, cooldown: Cooldown = Cooldown(HOUR)) -> None:
        runs.append(n)

    keys = [(await shadow.add(refresh)(n)).key for n in range(30)]
    with caplog.at_level(logging.INFO, logger="shadows.worker"):
        await run_workers(shadow, 3)
    assert len(runs) == 1
    assert await states(shadow, keys) == {"completed": 1, "dropped": 29}
    assert caplog.text.count("dropped by Cooldown(1:00:00): in cooldown") == 29
    ttl = await shadow.client.pttl(shadow.keys.cooldown(task_name(refresh)))
    assert 0 < ttl <= 3_600_000  # the window stays open, in Redis, for the hour


async def test_a_cooldown_per_argument_value(shadow: Shadow) -> None:
    runs: list[str] = []

    async def sync(customer_id: str, cooldown: Cooldown = Cooldown(HOUR, "customer_id")) -> None:
        runs.append(customer_id)

    for customer in ["a", "b", "a", "c", "b", "a"]:
        await shadow.add(sync)(customer)
    await run_workers(shadow, 2)
    assert sorted(runs) == ["a", "b", "c"]


async def test_after_the_window_a_run_starts_again(shadow: Shadow) -> None:
    runs: list[int] = []

    @shadow.task(cooldown=Cooldown(timedelta(milliseconds=150)))
    async def ping(n: int) -> None:
        runs.append(n)

    await ping.schedule(1)
    await ping.schedule(2)
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert runs == [1]
    cooldown_key = shadow.keys.cooldown(ping.name)

    async def expired() -> bool:
        return not await shadow.client.exists(cooldown_key)

    await wait_for(expired, 5, "the cooldown to expire")
    await ping.schedule(3)
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert runs == [1, 3]


async def test_retries_of_a_run_are_not_dropped_by_its_cooldown(shadow: Shadow) -> None:
    attempts: list[int] = []

    async def flaky(cooldown: Cooldown = Cooldown(HOUR), retry: Retry = Retry(attempts=3)) -> None:
        attempts.append(retry.attempt)
        if retry.attempt < 3:
            raise RuntimeError("not yet")

    await shadow.add(flaky, key="flaky")()
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert attempts == [1, 2, 3]
    assert await shadow.task_state("flaky") == "completed"


# -- RateLimit -----------------------------------------------------------------------


async def test_a_rate_limit_postpones_starts_across_three_workers(shadow: Shadow) -> None:
    starts: list[float] = []
    per = 0.5

    async def call_api(n: int, rate: RateLimit = RateLimit(3, timedelta(seconds=per))) -> None:
        starts.append(time.monotonic())

    keys = [(await shadow.add(call_api)(n)).key for n in range(10)]
    began = time.monotonic()
    await run_workers(shadow, 3)
    assert len(starts) == 10  # postponed, none lost
    assert await states(shadow, keys) == {"completed": 10}
    # 10 starts at 3 per 500 ms need three more windows after the first
    assert time.monotonic() - began >= 3 * per - 0.05
    # a window measured on the task side may be shorter than the one Redis counted by
    # the time from the gate to the task body (a few ms; more on a loaded machine)
    assert busiest_window(starts, per - 0.15) <= 3


async def test_runs_postponed_together_come_back_one_slot_apart(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []
    per = 0.2

    async def sync(n: int, rate: RateLimit = RateLimit(2, timedelta(seconds=per))) -> None:
        starts.append(time.monotonic())

    for n in range(20):
        await shadow.add(sync)(n)
    with caplog.at_level(logging.INFO, logger="shadows.worker"):
        await run_workers(shadow, 3)
    assert len(starts) == 20
    assert busiest_window(starts, per - 0.15) <= 2
    # Each postponed run gets a slot of its own, and is postponed again only when the runs
    # before it started late (a busy machine): about 18 to 36 postponements, where coming
    # back all at the first free moment costs a recheck per window for every waiting run
    # (18 + 16 + ... + 2 = 90). The bound leaves room for a loaded machine's late starts.
    postponed = caplog.text.count(" postponed ")
    assert 18 <= postponed <= 60, postponed
    waiting = shadow.keys.rate_waiting(task_name(sync))
    assert await shadow.client.zcard(waiting) == 0  # every run came back for its slot


async def test_a_rate_limit_with_drop_drops_and_logs_what_is_over(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    @shadow.task(rate_limit=RateLimit(2, HOUR, drop=True))
    async def notify(n: int) -> None:
        runs.append(n)

    keys = [(await notify.schedule(n)).key for n in range(8)]
    with caplog.at_level(logging.INFO, logger="shadows.worker"):
        await run_workers(shadow, 2)
    assert len(runs) == 2
    assert await states(shadow, keys) == {"completed": 2, "dropped": 6}
    assert caplog.text.count("dropped by RateLimit(2 per 1:00:00): over the limit") == 6


async def test_a_rate_limit_per_argument_value_and_one_per_task(shadow: Shadow) -> None:
    runs: list[str] = []

    async def fetch(
        host: str,
        per_host: RateLimit = RateLimit(1, HOUR, drop=True, scope="host"),
        overall: RateLimit = RateLimit(3, HOUR, drop=True),
    ) -> None:
        runs.append(host)

    for host in ["a", "a", "b", "b", "c", "d", "e"]:
        await shadow.add(fetch)(host)
    async with worker(shadow, concurrency=1) as w:
        await w.run_until_finished()
    assert runs == ["a", "b", "c"]


async def test_a_rate_limit_per_argument_value_postpones_across_three_workers(
    shadow: Shadow,
) -> None:
    starts: dict[str, list[float]] = {"a": [], "b": []}
    per = 0.4

    async def crawl(
        host: str, n: int, rate: RateLimit = RateLimit(2, timedelta(seconds=per), scope="host")
    ) -> None:
        starts[host].append(time.monotonic())

    keys = [(await shadow.add(crawl)("ab"[n % 2], n)).key for n in range(12)]
    began = time.monotonic()
    await run_workers(shadow, 3)
    assert await states(shadow, keys) == {"completed": 12}  # postponed, none lost
    # six runs per host at 2 per 400 ms need two more windows after the first; the two
    # hosts' windows are separate, so they do not need six
    assert time.monotonic() - began >= 2 * per - 0.05
    for host in ("a", "b"):
        assert len(starts[host]) == 6
        assert busiest_window(starts[host], per - 0.15) <= 2, host
    both = starts["a"] + starts["b"]
    assert busiest_window(both, per) > 2  # the hosts ran side by side


async def test_a_scope_naming_no_argument_fails_the_run(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    async def odd(n: int, rate: RateLimit = RateLimit(1, HOUR, scope="customer")) -> None:
        pass

    await shadow.add(odd, key="odd")(1)
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert await shadow.task_state("odd") == "failed"
    assert "RateLimit scope 'customer': the task has no such argument" in caplog.text


# -- together ------------------------------------------------------------------------


async def test_rate_limit_cooldown_and_concurrency_limit_together(shadow: Shadow) -> None:
    starts: list[float] = []
    running = Counter[str]()
    peak = Counter[str]()
    per = 0.5

    async def export(
        customer: str,
        n: int,
        limit: ConcurrencyLimit = ConcurrencyLimit("customer", max_concurrent=1),
        rate: RateLimit = RateLimit(4, timedelta(seconds=per)),
        cooldown: Cooldown = Cooldown(HOUR, scope="n"),
    ) -> None:
        starts.append(time.monotonic())
        running[customer] += 1
        peak[customer] = max(peak[customer], running[customer])
        await asyncio.sleep(0.01)
        running[customer] -= 1

    keys = [(await shadow.add(export)(f"c{n % 3}", n % 9)).key for n in range(18)]
    await run_workers(shadow, 3)
    assert len(starts) == 9  # one run per n: the other nine dropped by the cooldown
    assert await states(shadow, keys) == {"completed": 9, "dropped": 9}
    assert max(peak.values()) == 1
    assert busiest_window(starts, per - 0.15) <= 4
    leftovers = [
        key async for key in shadow.client.scan_iter(match=f"{shadow.keys.prefix}concurrency*")
    ]
    assert leftovers == []


# -- Debounce ------------------------------------------------------------------------


async def test_a_burst_of_submissions_makes_one_run_with_the_last_arguments(
    shadow: Shadow,
) -> None:
    runs: list[int] = []

    async def reindex(n: int, debounce: Debounce = Debounce(timedelta(milliseconds=200))) -> None:
        runs.append(n)

    executions = [await shadow.add(reindex)(n) for n in range(5)]
    assert len({execution.key for execution in executions}) == 1
    assert await shadow.task_state(executions[0].key) == "scheduled"
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert runs == [4]


async def test_keep_first_keeps_the_first_arguments_and_the_run_settles(
    shadow: Shadow,
) -> None:
    runs: list[tuple[int, float]] = []
    settle = 0.15

    @shadow.task(debounce=Debounce(timedelta(seconds=settle), keep="first"))
    async def rebuild(n: int) -> None:
        runs.append((n, time.monotonic()))

    async with worker(shadow) as w:
        task = asyncio.create_task(w.run_forever())
        for n in range(4):
            await rebuild.schedule(n)
        last = time.monotonic()
        await wait_for(lambda: bool(runs), 5, "the burst's run")
        w.stop()
        await task
    assert runs[0][0] == 0
    assert runs[0][1] - last >= settle - 0.02  # settle after the last submission


async def test_max_wait_caps_how_long_a_stream_of_submissions_postpones_the_run(
    shadow: Shadow,
) -> None:
    runs: list[tuple[int, datetime]] = []
    max_wait = timedelta(milliseconds=300)

    async def refresh(
        n: int,
        debounce: Debounce = Debounce(timedelta(milliseconds=150), max_wait=max_wait),
        execution: Execution = CurrentExecution(),
    ) -> None:
        runs.append((n, execution.when))

    async with worker(shadow) as w:
        task = asyncio.create_task(w.run_forever())
        first = datetime.now(UTC)
        n = 0
        while datetime.now(UTC) - first < timedelta(milliseconds=800):
            await shadow.add(refresh)(n)  # one submission every 50 ms: never settles
            n += 1
            await asyncio.sleep(0.05)
        await wait_for(lambda: bool(runs) and runs[-1][0] == n - 1, 5, "the last burst")
        w.stop()
        await task
    assert len(runs) >= 2
    # the first burst was due max_wait after its first submission (not settle after its
    # last), whenever the worker got to it
    assert runs[0][1] <= first + max_wait + timedelta(milliseconds=100)
    assert [number for number, _ in runs] == sorted(number for number, _ in runs)


async def test_debounce_per_argument_value(shadow: Shadow) -> None:
    runs: list[tuple[str, int]] = []

    async def recompute(
        account: str,
        n: int,
        debounce: Debounce = Debounce(timedelta(milliseconds=100), scope="account"),
    ) -> None:
        runs.append((account, n))

    for n in range(6):
        await shadow.add(recompute)("ab"[n % 2], n)
    async with worker(shadow) as w:
        await w.run_until_finished()
    assert sorted(runs) == [("a", 4), ("b", 5)]


async def test_one_run_per_burst_with_several_producers_and_workers(
    url: str, shadow: Shadow
) -> None:
    runs: list[int] = []

    async def digest(n: int, debounce: Debounce = Debounce(timedelta(milliseconds=300))) -> None:
        runs.append(n)

    producers = [Shadow(name=shadow.name, url=url) for _ in range(3)]
    for producer in producers:
        producer.register(digest)
    shadow.register(digest)
    try:
        executions = await asyncio.gather(*(producers[n % 3].add(digest)(n) for n in range(30)))
        assert len({execution.key for execution in executions}) == 1
        await run_workers(shadow, 3)
    finally:
        for producer in producers:
            await producer.aclose()
    assert len(runs) == 1


async def test_scoped_streams_cut_by_max_wait_across_producers_and_workers(
    url: str, shadow: Shadow
) -> None:
    """Two producers take turns submitting for two accounts, never leaving the settle time
    quiet, while three workers run: max_wait cuts each account's stream into bursts, and
    each burst runs once, with its last submission, due within max_wait of its first."""
    settle, max_wait = 0.1, 0.3
    runs: list[tuple[int, str, float]] = []

    async def digest(
        account: str,
        n: int,
        debounce: Debounce = Debounce(
            timedelta(seconds=settle), max_wait=timedelta(seconds=max_wait), scope="account"
        ),
        execution: Execution = CurrentExecution(),
    ) -> None:
        runs.append((n, execution.key, execution.when.timestamp()))

    producers = [Shadow(name=shadow.name, url=url) for _ in range(2)]
    for producer in producers:
        producer.register(digest)
    shadow.register(digest)
    #: per run key: (n, when the add was sent, when it returned), in order
    bursts: dict[str, list[tuple[int, float, float]]] = {}
    account_of: dict[str, str] = {}
    workers = [worker(shadow, f"flow-{i}") for i in range(3)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for each in workers:
                await stack.enter_async_context(each)
            serving = [asyncio.create_task(each.run_forever()) for each in workers]
            n, began = 0, time.time()
            while time.time() - began < 1.2:
                for account in ("a", "b"):
                    sent = time.time()
                    execution = await producers[n % 2].add(digest)(account, n)
                    bursts.setdefault(execution.key, []).append((n, sent, time.time()))
                    account_of[execution.key] = account
                    n += 1
                await asyncio.sleep(0.03)

            def every_burst_ran() -> bool:
                return {key for _, key, _ in runs} >= set(bursts)

            await wait_for(every_burst_ran, 10, "a run of every burst")
            for each in workers:
                each.stop()
            await asyncio.wait_for(asyncio.gather(*serving), 30)
    finally:
        for producer in producers:
            await producer.aclose()

    assert Counter(key for _, key, _ in runs) == Counter(set(bursts))  # one run per burst
    for n, key, when in runs:
        submitted = bursts[key]
        assert n == submitted[-1][0]  # the last submission's arguments
        opened = submitted[0][2]  # the burst opened while its first add was under way
        assert when <= opened + max_wait + 0.002, (key, when - submitted[0][1])
    per_account = Counter(account_of.values())
    assert per_account["a"] >= 2 and per_account["b"] >= 2, per_account  # max_wait cut them


async def test_debounced_tasks_refuse_replace_and_batches(shadow: Shadow) -> None:
    async def settle(debounce: Debounce = Debounce(timedelta(seconds=1))) -> None:
        pass

    with pytest.raises(ValueError, match="debounced"):
        await shadow.replace(settle, None, "k")()
    with pytest.raises(ValueError, match="not in a batch"):
        async with shadow.batch() as batch:
            batch.add(settle)()


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="window must be a positive timedelta"):
        Cooldown(timedelta(0))
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        RateLimit(0, HOUR)
    with pytest.raises(ValueError, match="per must be a positive timedelta"):
        RateLimit(1, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='keep must be "last" or "first"'):
        Debounce(HOUR, keep="middle")
    with pytest.raises(ValueError, match="scope must name an argument"):
        Debounce(HOUR, scope="not a name")
    shadow = Shadow(name="refused", url="memory://refused")
    with pytest.raises(TypeError, match="cooldown= takes a Cooldown"):
        shadow.task(cooldown=RateLimit(1, HOUR))(lambda: None)  # type: ignore[arg-type]


# -- [task.NAME] tables ----------------------------------------------------------------


async def test_task_tables_set_and_override_cooldown_and_rate_limit(
    shadow: Shadow, tmp_path: Path
) -> None:
    from shadows.settings import load_settings
    from shadows.settings.discovery import apply_tables
    from shadows.settings.effective import task_entries

    (tmp_path / "shadows.toml").write_text(
        "[task.ping]\n"
        'cooldown = "1h"\n'
        "[task.fetch]\n"
        "rate_limit = { limit = 1, drop = true }\n"
        "[task.orphan]\n"
        'rate_limit = { per = "1s" }\n'
    )
    loaded = load_settings(environ={}, cwd=tmp_path)
    runs: list[str] = []

    @shadow.task
    async def ping(n: int) -> None:
        runs.append("ping")

    @shadow.task(rate_limit=RateLimit(5, HOUR, scope="host"))
    async def fetch(host: str) -> None:
        runs.append(host)

    @shadow.task
    async def orphan() -> None: ...

    problems = apply_tables(loaded, shadow)
    assert [problem.message for problem in problems] == [
        "rate_limit needs limit and per (the task declares no RateLimit to keep them)"
    ]
    entries = task_entries(loaded, {"ping": ping, "fetch": fetch})
    assert entries["task.ping.cooldown"]["value"] == {"window": "1h", "scope": None}
    assert entries["task.fetch.rate_limit"]["value"] == {
        "limit": 1, "per": "1h", "drop": True, "scope": "host",
    }  # fmt: skip

    for n in range(3):
        await shadow.add("ping")(n)
    for host in ["a", "a", "b"]:
        await shadow.add("fetch")(host)
    async with worker(shadow, concurrency=1) as w:
        await w.run_until_finished()
    assert sorted(runs) == ["a", "b", "ping"]
    assert w.dropped == {"ping": 2, "fetch": 1}


async def test_a_debounce_call_sent_again_after_its_reply_was_lost_places_nothing_more(
    shadow: Shadow,
) -> None:
    """The chaos suite on a cluster: a submission sent to a master paused until its
    failover took effect, its reply was lost and the client sent it again, which found
    its own burst open and (as 'stale', then again under that key once it had run)
    opened a second burst: two runs for one burst."""
    script = shadow.link().flow.debounce
    keys = shadow.keys
    fresh = "digest~0123456789abcdef"
    names = [keys.stream, keys.queue, keys.debounce("digest")]
    names += [keys.run(""), keys.parked(""), keys.run(fresh), keys.parked(fresh)]
    fields = ["function", "digest", "key", fresh, "when", "0", "attempt", "1"]
    args = ["", fresh, 1_000, 0, -1, "last", *fields]  # settle 0: due at once, on the stream
    first = await script(keys=names, args=args)
    assert first == [b"opened", fresh.encode(), 1_000]
    # the same call again (the client's retry), and the producer's next attempt under the
    # burst's key once a worker ran and settled it
    assert await script(keys=names, args=args) == first
    await shadow.client.delete(keys.stream)
    await shadow.client.hset(keys.run(fresh), "state", "completed")
    again = ["", fresh, 5_000, 0, -1, "last", *fields]
    again_names = [*names[:3], keys.run(fresh), keys.parked(fresh), *names[5:]]
    assert await script(keys=again_names, args=[fresh, *again[1:]]) == first
    assert await shadow.client.xlen(keys.stream) == 0
