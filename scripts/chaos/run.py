"""The orchestrator: ``python scripts/chaos`` (or ``python scripts/chaos/run.py``).

A run goes through these phases:

1. start a private redis-server (AOF, ``appendfsync always``), the perpetual chains, N
   worker processes and the producer;
2. *faults*: for ``--duration``, inject faults at random intervals (seeded) while the
   producer keeps adding tasks (tolerating errors while Redis is away);
3. *settle*: faults and producer stop, every worker is back; the perpetual chains must
   keep running;
4. *drain*: the chains are asked to stop; wait until the stream and the queue are empty;
5. *stop*: SIGTERM every worker (each must exit 0), then inspect the keys left in Redis;
6. verify the records and write the report (table on stdout, JSON and Markdown files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python scripts/chaos/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from chaos import sabotage, tasks
from chaos.cluster import ClusterTarget
from chaos.faults import FaultInjector
from chaos.producer import Producer
from chaos.report import render, write_report
from chaos.servers import RedisProcess
from chaos.verify import Verdict, verify
from chaos.workers import ROOT, WorkerPool
from shadows import Shadow
from shadows.core.connection import cluster_client
from shadows.core.durations import parse_duration
from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.urls import parse_deployment

SHADOW = "chaos"
#: Work must resume this fast after Redis answers again (the issue's target).
RESUME_TARGET = 2.0


@dataclass
class Config:
    """Everything that shapes one run; the presets are :func:`short` and :func:`long`."""

    duration: float = 55.0
    workers: int = 3
    seed: int = 1
    concurrency: int = 10
    redelivery_timeout: float = 2.0
    #: The workers' heartbeat interval: a killed worker's tasks are taken over after
    #: three of them (shorter than the redelivery timeout, so that path is the one used).
    heartbeat_interval: float = 0.4
    reconnection_delay: float = 0.5
    #: The workers' delivery limit: a poison task is dead-lettered after this many runs.
    max_deliveries: int = 5
    #: Clients' socket timeout set in the URL; ``None`` keeps the library default (10 s).
    socket_timeout: float | None = 2.0
    rate: float = 12.0
    fault_interval: tuple[float, float] = (2.0, 4.5)
    #: How long Redis stays paused (SIGSTOP); longer than the socket timeout.
    pause_seconds: tuple[float, float] = (2.5, 3.5)
    warmup: float = 3.0
    settle: float = 5.0
    drain_timeout: float = 90.0
    sigterm_timeout: float = 60.0
    label: str = "short"
    #: Run against a cluster (3 masters, 3 replicas; see :mod:`chaos.cluster`) instead of
    #: one server: Redis faults become failovers of the shadow's master.
    cluster: bool = False
    #: The shadow's shard count (``shards=N``): on a cluster, each Redis fault hits the
    #: master of one of its shards, drawn at random.
    shards: int = 1
    #: Break the workers on purpose (see :mod:`chaos.sabotage`); the run must then fail.
    sabotage: str | None = None
    directory: Path = field(default_factory=lambda: ROOT / "chaos-runs")
    results: Path | None = field(default_factory=lambda: ROOT / "chaos" / "results")


def short(seed: int = 1, **changes: Any) -> Config:
    """The CI run: about a minute of faults, 2 s socket timeouts to keep pauses short."""
    return Config(seed=seed, **changes)


def long(duration: float = 600.0, seed: int = 1, **changes: Any) -> Config:
    """The run by hand: the library's own socket timeout (10 s), so pauses last 11-13 s."""
    values: dict[str, Any] = {
        "duration": duration,
        "seed": seed,
        "redelivery_timeout": 3.0,
        "socket_timeout": None,
        "fault_interval": (3.0, 7.0),
        "pause_seconds": (11.0, 13.0),
        "settle": 8.0,
        "drain_timeout": 180.0,
        "label": "long",
    }
    values.update(changes)
    return Config(**values)


@dataclass
class Outcome:
    """What a run produced: the verdict, the figures of the report and where it lives."""

    verdict: Verdict
    report: dict[str, Any]
    directory: Path
    files: list[Path]

    @property
    def ok(self) -> bool:
        return bool(self.report["passed"])


def _commit() -> str:
    """The checked-out commit (and whether the tree has changes), for the report."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' (with local changes)' if dirty else ''}"


def _url(base: str, socket_timeout: float | None) -> str:
    return base if socket_timeout is None else f"{base}?socket_timeout={socket_timeout:g}"


def _worker_arguments(config: Config) -> list[str]:
    return [
        "--concurrency", str(config.concurrency),
        "--redelivery-timeout", f"{round(config.redelivery_timeout * 1000)}ms",
        "--heartbeat-interval", f"{round(config.heartbeat_interval * 1000)}ms",
        "--reconnection-delay", f"{round(config.reconnection_delay * 1000)}ms",
        "--max-deliveries", str(config.max_deliveries),
        "--logging-level", "INFO",
    ]  # fmt: skip


async def wait_drained(client: Redis, shards: list[Keys], timeout: float) -> tuple[bool, float]:
    """Poll until nothing is queued or ready in any shard; ``(drained, seconds waited)``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            async with client.pipeline(transaction=False) as pipe:
                for keys in shards:
                    pipe.xlen(keys.stream)
                    pipe.zcard(keys.queue)
                counts = await pipe.execute()
            if not any(counts):
                return True, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started
        await asyncio.sleep(0.25)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def inspect_keys(client: Redis, shards: list[Keys]) -> dict[str, Any]:
    """What the shadow left in Redis (every shard); every key but the streams (the work,
    and the strike feed that revocations also use, all bounded) must carry an expiry."""
    state: dict[str, Any] = {
        "keys": 0,
        "keys_by_kind": {},
        "without_expiry": [],
        "stream_length": 0,
        "queue_length": 0,
        "pending": 0,
        "consumers_left": 0,
        "dead_letters": [],
        "dead_letter_reasons": {},
    }
    kinds: dict[str, int] = state["keys_by_kind"]
    reasons: dict[str, str] = state["dead_letter_reasons"]
    for keys in shards:
        pattern = f"{keys.prefix}*"
        found = sorted([_text(k) async for k in client.scan_iter(match=pattern, count=1000)])
        state["keys"] += len(found)
        for key in found:
            kind = key[len(keys.prefix) :].split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            if await client.pttl(key) == -1 and key not in (keys.stream, keys.strikes, keys.layout):
                state["without_expiry"].append(f"{key} ({_text(await client.type(key))})")
        state["stream_length"] += await client.xlen(keys.stream)
        state["queue_length"] += await client.zcard(keys.queue)
        for member in await client.zrange(keys.failed, 0, -1):
            name = _text(member)  # type: ignore[arg-type]
            reason, error = await client.hmget(keys.dead(name), ["reason", "error"])
            reasons[name] = _text(reason or b"(expired)")
            state["dead_letters"].append(f"{name}: {reasons[name]}: {_text(error or b'')[:200]}")
        if await client.exists(keys.stream):
            state["pending"] += (await client.xpending(keys.stream, WORKER_GROUP))["pending"]
            consumers = await client.xinfo_consumers(keys.stream, WORKER_GROUP)
            state["consumers_left"] += len(consumers)
    return state


def _make_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def run_chaos(config: Config) -> Outcome:
    """One full chaos run; see the module docstring."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = config.directory / f"{stamp}-{config.label}-seed{config.seed}"
    _make_directory(directory / "redis")
    rng = random.Random(config.seed)
    server: Any
    shards = [Keys(SHADOW, i) for i in range(config.shards)]
    if config.cluster:
        server = ClusterTarget(SHADOW, config.shards, random.Random(config.seed))
    else:
        server = RedisProcess(persistent=True, directory=str(directory / "redis"))
    await asyncio.to_thread(server.start)
    url = _url(server.url, config.socket_timeout)
    environment = {"SHADOW_SHARDS": str(config.shards)}
    if config.sabotage:
        environment[sabotage.VARIABLE] = config.sabotage
    pool = WorkerPool(
        directory, url, SHADOW, config.workers, _worker_arguments(config), config.sigterm_timeout,
        environment,
    )  # fmt: skip
    timeline: dict[str, float] = {"started": time.time()}
    monitor: Any = (
        cluster_client(parse_deployment(f"{server.url}?socket_timeout=2"))  # type: ignore[arg-type]
        if config.cluster
        else Redis.from_url(server.url, socket_timeout=2.0, socket_connect_timeout=2.0)
    )
    try:
        async with Shadow(name=SHADOW, url=url, shards=config.shards) as shadow:
            for function in tasks.tasks:
                shadow.register(function)
            await shadow.ensure_group()  # the home shard's; the workers make the others
            producer = Producer(shadow, directory, rng, config.rate, config.redelivery_timeout)
            await producer.add_chains()
            await pool.start_all()
            stop_producing = asyncio.Event()
            producing = asyncio.create_task(producer.run(stop_producing))
            await asyncio.sleep(config.warmup)

            timeline["faults_started"] = time.time()
            injector = FaultInjector(
                directory, pool, server, producer, monitor, shards, rng,
                config.fault_interval, config.pause_seconds, config.redelivery_timeout,
            )  # fmt: skip
            await injector.run(time.monotonic() + config.duration)
            await pool.settle()  # every stopped worker has been replaced
            timeline["faults_ended"] = time.time()
            stop_producing.set()
            await producing
            await producer.finish()

            await asyncio.sleep(config.settle)
            (directory / tasks.STOP_FLAG).touch()
            timeline["stop_requested"] = time.time()
            drained, waited = await wait_drained(monitor, shards, config.drain_timeout)
            timeline["drained"] = time.time()
            await pool.stop_all()
            timeline["workers_stopped"] = time.time()
            state = await inspect_keys(monitor, shards)
            state["drained"] = drained
            state["drain_seconds"] = round(waited, 3)
    finally:
        await pool.kill_all()
        await monitor.aclose()
        await asyncio.to_thread(server.shutdown if config.cluster else server.stop)
    # On a cluster, a failover (a killed master, a pause past the node timeout) may lose the
    # delivery count the old master had not replicated yet: a poison task may then run once
    # more per such failover (documented in docs/reliability-chaos.md).
    lossy = ("redis_restart_sigkill", "redis_pause_long", "redis_pause_short")
    failovers = sum(injector.counts[kind] for kind in lossy) if config.cluster else 0
    # ... and a master paused past the node timeout, once resumed, acts as a master (runs
    # scripts, hands out messages) until it hears of its replica's promotion: what a
    # worker started from it there runs again from the new master, possibly at once.
    verdict = verify(
        directory, timeline["faults_ended"], timeline["stop_requested"], tasks.LIMIT,
        config.max_deliveries + failovers, lossy if config.cluster else (),
    )  # fmt: skip
    report = _report(config, verdict, injector.counts, state, timeline, server)
    files = write_report(report, directory, config.results, f"{stamp}-{config.label}")
    return Outcome(verdict, report, directory, files)


def _report(
    config: Config,
    verdict: Verdict,
    faults: dict[str, int],
    state: dict[str, Any],
    timeline: dict[str, float],
    server: RedisProcess,
) -> dict[str, Any]:
    violations = dict(verdict.violations.items())
    # Only when work was waiting as Redis came back (or that could not be checked).
    slow = [
        r for r in verdict.resume
        if r["kind"].startswith("redis_restart") and r["waiting_at_ready"] != 0
        and (r["resume_seconds"] is None or r["resume_seconds"] > RESUME_TARGET)
    ]  # fmt: skip
    violations["slow resume after a Redis restart"] = [json.dumps(r) for r in slow]
    end_state = []
    if not state["drained"]:
        end_state.append(f"the queue did not drain within {config.drain_timeout} s")
    for name in ("stream_length", "queue_length", "pending"):
        if state[name]:
            end_state.append(f"{name} is {state[name]} at the end")
    end_state += [f"left without expiry: {key}" for key in state["without_expiry"]]
    # the chaos tasks never fail for good: a dead letter is a task the faults cost, but
    # for a task that kills its worker, which must end as a poison dead letter
    reasons = state["dead_letter_reasons"]
    poison = set(verdict.poison_keys)
    end_state += [
        f"dead-lettered: {letter}"
        for letter, name in zip(state["dead_letters"], reasons, strict=True)
        if not (name in poison and reasons[name] == "poison")
    ]
    violations["end state"] = end_state
    violations["poison tasks"] = verdict.poison + [
        f"{key}: not dead-lettered as poison (dead letter: {reasons.get(key, 'none')})"
        for key in verdict.poison_keys
        if reasons.get(key) != "poison"
    ]
    passed = not any(violations.values())
    resumes = [r["resume_seconds"] for r in verdict.resume if r["resume_seconds"] is not None]
    restarts = [
        r["resume_seconds"] for r in verdict.resume
        if r["kind"].startswith("redis_restart") and r["resume_seconds"] is not None
    ]  # fmt: skip
    recoveries = [
        r["recovery_seconds"] for r in verdict.recovery if r["recovery_seconds"] is not None
    ]
    return {
        "passed": passed,
        "label": config.label,
        "config": {
            **{k: v for k, v in asdict(config).items() if k not in ("directory", "results")},
            "socket_timeout": config.socket_timeout or "library default (10 s)",
            "python": platform.python_version(),
            "commit": _commit(),
            "redis_server": server.binary,
        },
        "timeline": {
            "fault_phase_seconds": round(timeline["faults_ended"] - timeline["faults_started"], 1),
            "total_seconds": round(timeline["workers_stopped"] - timeline["started"], 1),
            "drain_seconds": state["drain_seconds"],
        },
        "tasks": {
            "accepted": dict(verdict.accepted),
            "accepted_total": sum(
                n for kind, n in verdict.accepted.items() if kind != "keyed-again"
            ),
            "rejected": dict(verdict.rejected),
            "rejected_total": sum(verdict.rejected.values()),
            "rejected_but_ran": verdict.rejected_but_ran,
            "runs": verdict.runs,
            "runs_by_outcome": dict(verdict.runs_by_outcome),
            "executions": verdict.executions,
        },
        "faults": dict(faults),
        "faults_total": sum(faults.values()),
        "duplicates": {
            "reruns": verdict.reruns,
            "after_interruption": verdict.reruns_after_interruption,
            "duplicate_completions": verdict.duplicate_completions,
            "runs_cancelled_by_fencing_or_stop": verdict.fenced_runs,
            "runs_cut_by_sigkill": verdict.killed_runs,
            "failover_overlaps": verdict.failover_overlaps,
        },
        "lost": len(verdict.lost),
        "cancellations": {
            "took_effect": verdict.cancellations,
            "stopped_while_running": verdict.cancelled_while_running,
        },
        "resume": {
            "target_seconds": RESUME_TARGET,
            "after_restarts_max": max(restarts, default=None),
            "max": max(resumes, default=None),
            "each": verdict.resume,
        },
        "recovery_after_sigkill": {
            # missed heartbeats x interval + 1 s (the chaos workers keep the default 3)
            "target_seconds": round(3 * config.heartbeat_interval + 1.0, 3),
            "max": max(recoveries, default=None),
            "median": statistics.median(recoveries) if recoveries else None,
            "each": verdict.recovery,
        },
        "poison": {
            "max_deliveries": config.max_deliveries,
            "tasks": len(verdict.poison_keys),
            "runs": verdict.poison_runs,
            "workers_killed": verdict.poison_kills,
        },
        "sigterm_exit_seconds_max": max(verdict.sigterm_exit_seconds, default=None),
        "chains": {"runs": verdict.chain_runs, "max_gap_seconds": verdict.chain_max_gap},
        "concurrency_max": verdict.max_concurrency,
        "rate_limit": {
            "limit": tasks.RATE_LIMIT,
            "per_seconds": tasks.RATE_PER,
            "most_in_window": verdict.rate_most_in_window,
        },
        "debounce": {
            "bursts": verdict.debounce_bursts,
            "submissions": verdict.debounce_submissions,
            "capped_by_max_wait": verdict.debounce_capped,
            "max_wait_seconds": tasks.DEBOUNCE_MAX_WAIT,
        },
        "end_state": state,
        "violations": violations,
    }


def _duration(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return (_duration(low), _duration(high or low))


def parse_arguments(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python scripts/chaos",
        description="Run the shadows chaos suite: faults against workers and Redis, then "
        "check that nothing was lost.",
    )
    parser.add_argument(
        "--preset",
        choices=["short", "long"],
        default=None,
        help="short: ~1 min of faults, 2 s socket timeouts (the CI run); long: "
        "the library's socket timeout and longer pauses (default: long when "
        "--duration is 5m or more)",
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="how long faults are injected (e.g. 55s, 10m)",
    )
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="tasks added per second")
    parser.add_argument("--redelivery-timeout", type=_duration, default=None)
    parser.add_argument("--reconnection-delay", type=_duration, default=None)
    parser.add_argument("--heartbeat-interval", type=_duration, default=None)
    parser.add_argument(
        "--socket-timeout",
        default=None,
        help="clients' socket timeout in the URL, or 'default' for the library's own",
    )
    parser.add_argument(
        "--fault-interval", type=_range, default=None, help="seconds between faults, e.g. 2s-5s"
    )
    parser.add_argument(
        "--pause", type=_range, default=None, help="how long Redis stays paused, e.g. 11s-13s"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run against a Redis Cluster (3 masters, 3 replicas) the suite starts: Redis "
        "faults become failovers of the shadow's master",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="spread the shadow over this many shards (shards=N); with --cluster, each "
        "Redis fault hits the master of one shard, drawn at random",
    )
    parser.add_argument(
        "--sabotage",
        choices=sabotage.MODES,
        default=None,
        help="break the workers on purpose to check that the run FAILS",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "chaos-runs",
        help="where the raw records and logs of the run go",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "chaos" / "results",
        help="where the JSON and Markdown reports go",
    )
    arguments = parser.parse_args(argv)
    seed = arguments.seed if arguments.seed is not None else random.randrange(1, 1_000_000)
    preset = arguments.preset or ("long" if (arguments.duration or 0) >= 300 else "short")
    config = long(seed=seed) if preset == "long" else short(seed=seed)
    config.workers = arguments.workers
    config.directory = arguments.runs_dir
    config.results = arguments.results
    config.sabotage = arguments.sabotage
    if arguments.cluster:
        config.cluster = True
        config.label = f"{config.label}-cluster"
    if arguments.shards < 1:
        parser.error("--shards must be at least 1")
    if arguments.shards > 1:
        config.shards = arguments.shards
        config.label = f"{config.label}-shards{config.shards}"
    if config.sabotage:
        config.label = f"{config.label}-sabotage-{config.sabotage}"
    overrides = {
        "duration": arguments.duration,
        "concurrency": arguments.concurrency,
        "rate": arguments.rate,
        "redelivery_timeout": arguments.redelivery_timeout,
        "reconnection_delay": arguments.reconnection_delay,
        "heartbeat_interval": arguments.heartbeat_interval,
        "fault_interval": arguments.fault_interval,
        "pause_seconds": arguments.pause,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    if arguments.socket_timeout is not None:
        default = arguments.socket_timeout == "default"
        config.socket_timeout = None if default else _duration(arguments.socket_timeout)
    if config.socket_timeout is not None and arguments.pause is None:
        low = config.socket_timeout + 0.5
        config.pause_seconds = (low, low + 1.0)
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_arguments(argv)
    print(
        f"chaos: {config.label} run, {config.duration:g} s of faults, {config.workers} workers, "
        f"{config.shards} shard(s), seed {config.seed}",
        flush=True,
    )
    outcome = asyncio.run(run_chaos(config))
    print(render(outcome.report))
    print(f"records and logs: {outcome.directory}")
    for path in outcome.files:
        print(f"report: {path}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
