"""Benchmark shadows beside its peers, in one run, and report the ratios.

    python scripts/benchmarks/run.py                      # everything, 20,000 tasks
    python scripts/benchmarks/run.py --quick              # small sizes, well under a minute
    python scripts/benchmarks/run.py --libs shadows,docket --tasks 5000

Each library gets its own virtual environment under scripts/benchmarks/.envs/<lib> (created and
filled from PyPI on first use; shadows is installed editable from this repository).
Workers and producers run as separate processes inside those environments through
scripts/benchmarks/harness.py; this orchestrator uses only the standard library. By default it
starts a private, throw-away ``redis-server`` so that other users of a shared Redis
neither disturb nor are disturbed by the run. See scripts/benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENVS = HERE / ".envs"
RESULTS = HERE / "results"
LOGS = RESULTS / "logs.tmp"
HARNESS = HERE / "harness.py"
DONE_KEY = "bench:done"

#: What goes into each library's environment. ``redis`` is for the harness's recorder.
SPECS: dict[str, list[str]] = {
    "shadows": ["-e", str(REPO), "redis"],
    "docket": ["pydocket==0.27.*", "redis"],
    "taskiq": ["taskiq==0.13.*", "taskiq-redis", "redis"],
    "dramatiq": ["dramatiq[redis]==2.2.*", "redis"],
    # saq 0.26 imports typing_extensions without declaring it as a dependency.
    "saq": ["saq==0.26.*", "typing_extensions", "redis"],
    "streaq": ["streaq==7.2.*", "redis"],
    "celery": ["celery[redis]==5.7.*", "redis"],
    "arq": ["arq==0.28.*", "redis"],
}
LIBRARIES = list(SPECS)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    higher_is_better: bool
    digits: int = 0


COLUMNS = [
    Column("enqueue", "enqueue /s", True),
    Column("schedule", "task.schedule() /s", True),
    Column("batch", "batch enqueue /s", True),
    Column("drain_c10", "drain c10 /s", True),
    Column("drain_c100", "drain c100 /s", True),
    Column("latency_p50", "latency p50 ms", False, 1),
    Column("latency_p99", "latency p99 ms", False, 1),
    Column("lateness_p50", "lateness p50 ms", False, 0),
    Column("lateness_p99", "lateness p99 ms", False, 0),
    Column("rss", "worker peak RSS MiB", False, 1),
    Column("scale_1", "drain 1 proc /s", True),
    Column("scale_2", "drain 2 procs /s", True),
    Column("scale_4", "drain 4 procs /s", True),
]


@dataclass
class Sizes:
    tasks: int
    latency_tasks: int
    latency_interval: float
    lateness_tasks: int
    lateness_lead: float
    processes: list[int]
    stall: float  # seconds without any progress before a run is called stuck


class RunFailed(Exception):
    """One workload of one library failed; the message says how (it goes in the table)."""


# -- a minimal Redis client (the orchestrator must not need any package) ----------------


class Redis:
    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.password = parts.password
        self.username = parts.username
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=30)
            self._buffer = b""
            if self.password:
                auth = [self.username, self.password] if self.username else [self.password]
                self._send("AUTH", *auth)
            self._send("SELECT", str(self.db))
        return self._sock

    def _send(self, *args: str) -> Any:
        assert self._sock is not None
        payload = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            payload.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(payload))
        return self._reply()

    def call(self, *args: str) -> Any:
        self._connect()
        try:
            return self._send(*args)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _line(self) -> bytes:
        assert self._sock is not None
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, size: int) -> bytes:
        assert self._sock is not None
        while len(self._buffer) < size + 2:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
        return data

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"Redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size)
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise RuntimeError(f"Unexpected Redis reply {line[:50]!r}")


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free port, no persistence; yields its URL (db 10)."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH; pass --redis-url to use a running one")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    LOGS.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=(LOGS / "redis-server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/10"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(url).call("PING")
                break
            except OSError as error:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(
                        f"{binary} did not start (see {LOGS}/redis-server.log)"
                    ) from error
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()


# -- environments -----------------------------------------------------------------------


def find_python312(explicit: str | None) -> str:
    """A Python 3.12 to build the environments with."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    if sys.version_info[:2] == (3, 12):
        candidates.append(sys.executable)
    found = shutil.which("python3.12")
    if found:
        candidates.append(found)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.12*/bin/python3.12"))
    for candidate in candidates:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.stdout.strip() == "True":
                return candidate
    raise SystemExit("No Python 3.12 found; pass --python /path/to/python3.12")


def spec_fingerprint(library: str) -> str:
    text = json.dumps(SPECS[library])
    if library == "shadows":  # reinstall when the project's dependencies change
        text += hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return text


def ensure_env(library: str, python: str) -> str:
    """Create or refresh scripts/benchmarks/.envs/<library>; returns its python."""
    env = ENVS / library
    env_python = env / "bin" / "python"
    marker = env / ".bench-spec"
    wanted = spec_fingerprint(library)
    if env_python.exists() and marker.exists() and marker.read_text() == wanted:
        return str(env_python)
    print(f"  installing {library} into {env.relative_to(REPO)} ...", flush=True)
    if not env_python.exists():
        subprocess.run([python, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [str(env_python), "-m", "pip", "install", "-q", "--upgrade", *SPECS[library]],
        check=True,
    )
    marker.write_text(wanted)
    return str(env_python)


# -- running the harness ----------------------------------------------------------------


@dataclass
class Context:
    library: str
    python: str
    url: str
    redis: Redis
    sizes: Sizes
    info: dict[str, Any] = field(default_factory=dict)

    def harness(self, *args: str) -> list[str]:
        return [self.python, str(HARNESS), self.library, *args]

    def flush(self) -> None:
        self.redis.call("FLUSHDB")


def produce(ctx: Context, mode: str, count: int, *extra: str, timeout: float) -> dict[str, Any]:
    command = ctx.harness(
        "produce", "--url", ctx.url, "--mode", mode, "--count", str(count), *extra
    )
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise RunFailed(f"producer timed out after {timeout:.0f} s") from error
    if done.returncode != 0:
        raise RunFailed(f"producer failed: {last_line(done.stderr)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "unsupported" in result:
        raise RunFailed(f"n/a: {result['unsupported']}")
    return result


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def enqueue_timeout(ctx: Context, count: int) -> float:
    return 120 + count / 50


class Workers:
    """Worker processes of one library, started together and released with one 'go'."""

    def __init__(
        self, ctx: Context, label: str, processes: int, concurrency: int, scheduling: bool
    ) -> None:
        self.ctx = ctx
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_paths = [LOGS / f"{ctx.library}-{label}-{i}.log" for i in range(processes)]
        args = ["worker", "--url", ctx.url, "--concurrency", str(concurrency)]
        if scheduling:
            args.append("--scheduling")
        self.processes = [
            subprocess.Popen(
                ctx.harness(*args),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=path.open("w"),
                start_new_session=True,
            )
            for path in self.log_paths
        ]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for process in self.processes:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RunFailed("worker did not get ready in time")
                ready, _, _ = select.select([process.stdout], [], [], remaining)
                if ready:
                    chunk = os.read(process.stdout.fileno(), 1)
                    if not chunk:
                        raise RunFailed(f"worker exited before ready: {self.log_tail()}")
                    line += chunk
            if line.strip() != b"READY":
                raise RunFailed(f"unexpected worker output {line!r}")

    def go(self) -> float:
        started = time.time()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()
        return started

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RunFailed(
                    f"worker exited with {process.returncode} mid-run: {self.log_tail()}"
                )

    def peak_rss_kib(self) -> int:
        peak = 0
        for process in self.processes:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        return peak

    def last_error(self) -> str:
        """The last line of the workers' logs that names an error, if any."""
        found = ""
        for path in self.log_paths:
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if "Error" in line or "ERROR" in line or "Exception" in line:
                        found = line.strip()[:200]
        return found

    def log_tail(self) -> str:
        tails = []
        for path in self.log_paths:
            with contextlib.suppress(OSError):
                tails.append(last_line(path.read_text(errors="replace")))
        return " | ".join(tails) or "(no log)"

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_records(ctx: Context, by_process: dict[str, int] | None = None) -> dict[int, list[float]]:
    """Start times of each task number recorded so far (several if it ran more than once).

    ``by_process``, if given, is filled with how many runs each worker process did.
    """
    records: dict[int, list[float]] = {}
    for raw in ctx.redis.call("LRANGE", DONE_KEY, "0", "-1") or []:
        n, at, pid = raw.decode().split()
        records.setdefault(int(n), []).append(float(at))
        if by_process is not None:
            by_process[pid] = by_process.get(pid, 0) + 1
    return records


def wait_for(
    ctx: Context, workers: Workers, expected: set[int], deadline: float | None = None
) -> dict[int, list[float]]:
    """Poll until every task in ``expected`` has run; fail when progress stalls."""
    last_length = -1
    last_progress = time.monotonic()
    while True:
        workers.check_alive()
        length = int(ctx.redis.call("LLEN", DONE_KEY))
        now = time.monotonic()
        if length != last_length:
            last_length, last_progress = length, now
        if length >= len(expected):
            records = read_records(ctx)
            if expected <= records.keys():
                time.sleep(0.3)  # let late duplicates, if any, show up
                return read_records(ctx)
        stalled = now - last_progress > ctx.sizes.stall
        if stalled and (deadline is None or time.time() > deadline):
            done = len(read_records(ctx).keys() & expected)
            error = workers.last_error()
            raise RunFailed(
                f"stuck: {done}/{len(expected)} tasks ran, none for {ctx.sizes.stall:.0f} s"
                + (f" (worker log: {error})" if error else "")
            )
        time.sleep(0.02)


def duplicates(records: dict[int, list[float]]) -> int:
    return sum(len(times) - 1 for times in records.values())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[index]


# -- workloads --------------------------------------------------------------------------


def fill_queue(ctx: Context, count: int) -> None:
    """Put ``count`` tasks in the queue, the fastest way the library offers (untimed)."""
    mode = "batch" if ctx.info.get("batch") is None else "single"
    produce(ctx, mode, count, timeout=enqueue_timeout(ctx, count))


def drain(ctx: Context, label: str, processes: int, concurrency: int) -> dict[str, Any]:
    """Run the ``tasks`` already queued with fresh workers; tasks/s from 'go' to last."""
    count = ctx.sizes.tasks
    with Workers(ctx, label, processes, concurrency, scheduling=False) as workers:
        workers.wait_ready()
        started = workers.go()
        wait_for(ctx, workers, set(range(count)))
        rss = workers.peak_rss_kib()
        by_process: dict[str, int] = {}
        records = read_records(ctx, by_process)
    first = min(min(times) for times in records.values())
    last = max(min(times) for times in records.values())
    seconds = last - started
    return {
        "value": count / seconds,
        "seconds": seconds,
        "first_task_after": first - started,
        "duplicates": duplicates(records),
        "peak_rss_mib": rss / 1024,
        "processes": processes,
        "concurrency": concurrency,
        "tasks_per_process": sorted(by_process.values(), reverse=True),
    }


def warm_up(ctx: Context, workers: Workers) -> None:
    """Send one task and wait for it, so the worker is fully up before measuring."""
    produce(ctx, "single", 1, "--first", "-1", timeout=enqueue_timeout(ctx, 1))
    wait_for(ctx, workers, {-1})
    ctx.redis.call("DEL", DONE_KEY)


def latency(ctx: Context) -> dict[str, Any]:
    count, interval = ctx.sizes.latency_tasks, ctx.sizes.latency_interval
    with Workers(ctx, "latency", 1, 10, scheduling=False) as workers:
        workers.wait_ready()
        workers.go()
        warm_up(ctx, workers)
        sent = produce(
            ctx,
            "paced",
            count,
            "--interval",
            str(interval),
            timeout=enqueue_timeout(ctx, count) + count * interval,
        )["sent"]
        records = wait_for(ctx, workers, set(range(count)))
    delays = [(min(records[n]) - sent[n]) * 1000 for n in range(count)]
    return {
        "p50": percentile(delays, 0.50),
        "p99": percentile(delays, 0.99),
        "max": max(delays),
        "tasks": count,
        "interval_ms": interval * 1000,
        "duplicates": duplicates(records),
    }


def lateness(ctx: Context, enqueue_rate: float | None) -> dict[str, Any]:
    count = ctx.sizes.lateness_tasks
    lead = ctx.sizes.lateness_lead
    if enqueue_rate:  # leave time to enqueue them all before the moment comes
        lead = max(lead, 1 + 2.5 * count / enqueue_rate)
    with Workers(ctx, "lateness", 1, 10, scheduling=True) as workers:
        workers.wait_ready()
        workers.go()
        warm_up(ctx, workers)
        sent = produce(
            ctx, "at", count, "--lead", f"{lead:.2f}", timeout=enqueue_timeout(ctx, count)
        )
        target = float(sent["target"])
        records = wait_for(ctx, workers, set(range(count)), deadline=target)
    late = [(min(records[n]) - target) * 1000 for n in range(count)]
    early = sum(1 for value in late if value < -1)  # more than 1 ms early
    return {
        "p50": percentile(late, 0.50),
        "p99": percentile(late, 0.99),
        "max": max(late),
        "min": min(late),
        "early": early,
        "tasks": count,
        "lead_s": round(lead, 2),
        "enqueue_finished_after_target_s": max(0.0, float(sent["finished"]) - target),
        "duplicates": duplicates(records),
    }


def run_library(ctx: Context) -> dict[str, Any]:
    """Every workload for one library; failures become reasons, never numbers."""
    sizes = ctx.sizes
    cells: dict[str, Any] = {}
    details: dict[str, Any] = {}

    def attempt(keys: list[str], label: str, work: Any) -> Any:
        print(f"  {label} ...", end=" ", flush=True)
        began = time.monotonic()
        try:
            result = work()
        except RunFailed as failure:
            text = str(failure)
            reason = text if text.startswith("n/a") else f"error: {text}"
            for key in keys:
                cells[key] = {"na": reason}
            print(reason)
            return None
        except Exception as failure:  # a bug in an adapter must not end the whole run
            reason = f"error: {type(failure).__name__}: {failure}"
            for key in keys:
                cells[key] = {"na": reason}
            print(reason)
            return None
        finally:
            with contextlib.suppress(Exception):
                ctx.flush()
        print(f"done in {time.monotonic() - began:.1f} s", flush=True)
        return result

    def enqueue_then_drain() -> dict[str, Any]:
        result = produce(ctx, "single", sizes.tasks, timeout=enqueue_timeout(ctx, sizes.tasks))
        cells["enqueue"] = {"value": sizes.tasks / result["seconds"]}
        details["enqueue"] = result
        return drain(ctx, "c10", 1, 10)

    ctx.flush()
    c10 = attempt(
        ["enqueue", "drain_c10"], "enqueue one by one, then drain c10", enqueue_then_drain
    )
    if c10 is not None:
        cells["drain_c10"] = {"value": c10["value"]}
        details["drain_c10"] = c10

    def declared_enqueue() -> None:
        result = produce(ctx, "declared", sizes.tasks, timeout=enqueue_timeout(ctx, sizes.tasks))
        cells["schedule"] = {"value": sizes.tasks / result["seconds"]}
        details["schedule"] = result

    ctx.flush()
    attempt(["schedule"], "enqueue one by one through a declared task", declared_enqueue)

    batch_reason = ctx.info.get("batch")
    if batch_reason is not None:
        cells["batch"] = {"na": f"n/a: {batch_reason}"}

    def batch_then_drain() -> dict[str, Any]:
        if batch_reason is None:
            result = produce(ctx, "batch", sizes.tasks, timeout=enqueue_timeout(ctx, sizes.tasks))
            cells["batch"] = {"value": sizes.tasks / result["seconds"]}
            details["batch"] = result
        else:
            fill_queue(ctx, sizes.tasks)
        return drain(ctx, "c100", 1, 100)

    label = "batch enqueue, then drain c100" if batch_reason is None else "drain c100"
    c100 = attempt(["drain_c100"], label, batch_then_drain)
    if c100 is not None:
        cells["drain_c100"] = {"value": c100["value"]}
        details["drain_c100"] = c100

    peaks = [run["peak_rss_mib"] for run in (c10, c100) if run is not None]
    cells["rss"] = {"value": max(peaks)} if peaks else {"na": "error: no drain finished"}

    for processes in sizes.processes:
        key = f"scale_{processes}"
        if processes == 1:  # the same workload as drain c10: reuse it
            cells[key] = dict(cells.get("drain_c10", {"na": "error: drain c10 failed"}))
            continue

        def scaled(processes: int = processes) -> dict[str, Any]:
            fill_queue(ctx, sizes.tasks)
            return drain(ctx, f"x{processes}", processes, 10)

        result = attempt([key], f"drain with {processes} processes", scaled)
        if result is not None:
            cells[key] = {"value": result["value"]}
            details[key] = result

    result = attempt(["latency_p50", "latency_p99"], "enqueue→start latency", lambda: latency(ctx))
    if result is not None:
        cells["latency_p50"] = {"value": result["p50"]}
        cells["latency_p99"] = {"value": result["p99"]}
        details["latency"] = result

    schedule_reason = ctx.info.get("schedule")
    if schedule_reason is not None:
        for key in ("lateness_p50", "lateness_p99"):
            cells[key] = {"na": f"n/a: {schedule_reason}"}
    else:
        enqueue_rate = cells.get("enqueue", {}).get("value")
        result = attempt(
            ["lateness_p50", "lateness_p99"],
            "lateness of tasks due at one moment",
            lambda: lateness(ctx, enqueue_rate),
        )
        if result is not None:
            cells["lateness_p50"] = {"value": result["p50"]}
            cells["lateness_p99"] = {"value": result["p99"]}
            details["lateness"] = result
    return {"cells": cells, "details": details}


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One library's repeated runs: the median of each cell, every run kept."""
    if len(runs) == 1:
        return runs[0]
    cells: dict[str, Any] = {}
    for key in dict.fromkeys(key for run in runs for key in run["cells"]):
        values = [
            run["cells"][key]["value"] for run in runs if "value" in run["cells"].get(key, {})
        ]
        if values:
            cells[key] = {"value": statistics.median(values), "runs": values}
            failed = [run["cells"][key]["na"] for run in runs if "na" in run["cells"].get(key, {})]
            if failed:
                cells[key]["failed_runs"] = failed
        else:
            cells[key] = next(run["cells"][key] for run in runs if key in run["cells"])
    return {"cells": cells, "details_per_run": [run["details"] for run in runs]}


# -- reporting --------------------------------------------------------------------------


def format_value(column: Column, cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    if "value" not in cell:
        return "n/a" if str(cell.get("na", "")).startswith("n/a") else "error"
    value = float(cell["value"])
    if column.digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{column.digits}f}"


def ratios(report: dict[str, Any], subject: str = "shadows") -> dict[str, Any]:
    """Per column: the subject's value divided by the best peer's (and who that is)."""
    libraries = report["libraries"]
    out: dict[str, Any] = {}
    for column in COLUMNS:
        mine = libraries.get(subject, {}).get("cells", {}).get(column.key, {}).get("value")
        peers = [
            (lib, data["cells"][column.key]["value"])
            for lib, data in libraries.items()
            if lib != subject and "value" in data.get("cells", {}).get(column.key, {})
        ]
        if not peers:
            out[column.key] = {"na": "no peer result"}
            continue
        pick = max if column.higher_is_better else min
        best_lib, best = pick(peers, key=lambda item: item[1])
        entry: dict[str, Any] = {"best_peer": best_lib, "best_value": best}
        if mine is None:
            entry["na"] = f"no {subject} result"
        elif best == 0:
            entry["na"] = "best peer value is 0"
        else:
            entry["ratio"] = mine / best
        out[column.key] = entry
    return out


def render_table(report: dict[str, Any], markdown: bool) -> str:
    libraries = report["libraries"]
    header = ["library"] + [f"{c.label} {'↑' if c.higher_is_better else '↓'}" for c in COLUMNS]
    rows: list[list[str]] = []
    for lib, data in libraries.items():
        cells = data.get("cells", {})
        rows.append([lib] + [format_value(c, cells.get(c.key)) for c in COLUMNS])
    subject_ratios = report.get("ratios", {})
    if "shadows" in libraries and len(libraries) > 1:
        ratio_row = ["shadows ÷ best peer"]
        best_row = ["best peer"]
        for column in COLUMNS:
            entry = subject_ratios.get(column.key, {})
            ratio_row.append(f"{entry['ratio']:.2f}×" if "ratio" in entry else "n/a")
            best_row.append(entry.get("best_peer", "-"))
        rows += [ratio_row, best_row]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(header))]
    for row in rows:
        lines.append("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)))
    return "\n".join(lines)


def render_notes(report: dict[str, Any]) -> list[str]:
    """Why each n/a or error, each library's non-default settings, and oddities."""
    lines: list[str] = []
    for lib, data in report["libraries"].items():
        info = data.get("info", {})
        items: list[str] = []
        items += [f"setting: {note}" for note in info.get("notes", [])]
        reasons: dict[str, list[str]] = {}
        for column in COLUMNS:
            cell = data.get("cells", {}).get(column.key, {})
            if "na" in cell:
                reasons.setdefault(cell["na"], []).append(column.label)
            for failure in cell.get("failed_runs", []):
                reasons.setdefault(f"one run failed: {failure}", []).append(column.label)
        items += [f"{', '.join(cols)}: {reason}" for reason, cols in reasons.items()]
        runs = data.get("details_per_run") or [data.get("details", {})]
        for number, details in enumerate(runs, 1):
            items += run_notes(details, f"run {number}, " if len(runs) > 1 else "")
        if "error" in data:
            items.append(f"error: {data['error']}")
        version = info.get("version", "?")
        lines.append(f"- **{lib}** {version}")
        lines += [f"  - {item}" for item in items]
    return lines


def run_notes(details: dict[str, Any], prefix: str) -> list[str]:
    """Start-up delays, duplicates and lateness extremes of one run of one library."""
    items: list[str] = []
    for name, detail in details.items():
        if isinstance(detail, dict) and detail.get("duplicates"):
            items.append(f"{prefix}{name}: {detail['duplicates']} task(s) ran more than once")
    for name in ("drain_c10", "drain_c100"):
        if name in details:
            items.append(
                f"{prefix}{name}: first task ran {details[name]['first_task_after']:.2f} s "
                f"after the worker was told to start; {details[name]['seconds']:.2f} s in all"
            )
    late = details.get("lateness")
    if late:
        items.append(
            f"{prefix}lateness: due {late['lead_s']} s after the first add; earliest "
            f"{late['min']:.0f} ms, latest {late['max']:.0f} ms"
            + (f", {late['early']} ran EARLY" if late["early"] else "")
            + (
                f"; enqueueing ended {late['enqueue_finished_after_target_s']:.2f} s "
                "after the due time"
                if late["enqueue_finished_after_target_s"] > 0
                else ""
            )
        )
    return items


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    sizes = meta["sizes"]
    parts = [
        "# Benchmark results",
        "",
        f"`{meta['command']}` on {meta['date']}: {meta['machine']}, Python "
        f"{meta['python']}, Redis {meta['redis_version']} ({meta['redis']}); shadows at "
        f"{meta.get('shadows_source', '?')}.",
        "",
        f"{sizes['tasks']:,} tasks per enqueue/drain run; latency over "
        f"{sizes['latency_tasks']:,} tasks sent every {sizes['latency_interval'] * 1000:.0f} "
        f"ms to an idle worker (concurrency 10); lateness over {sizes['lateness_tasks']:,} "
        f"tasks due at one moment (worker concurrency 10). ↑ higher is better, ↓ lower is "
        "better. The ratio row is shadows divided by the best peer in that column (for ↓ "
        "columns a ratio above 1 means shadows is worse). "
        + (
            f"Each cell is the median of {meta['repeat']} runs (all values in latest.json). "
            if meta["repeat"] > 1
            else "One run each: on a shared 2-core machine expect 10-30 % of noise. "
        )
        + "What each column measures: scripts/benchmarks/README.md.",
        "",
        render_table(report, markdown=True),
        "",
        "## Notes",
        "",
        *render_notes(report),
        "",
    ]
    return "\n".join(parts)


# -- main -------------------------------------------------------------------------------


def shadows_source() -> str:
    """The commit shadows was benchmarked at (editable install: the working tree)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "shadows", "pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} + uncommitted changes in shadows/" if dirty else commit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI micro-benchmark)")
    parser.add_argument(
        "--libs", default=",".join(LIBRARIES), help=f"comma list from {','.join(LIBRARIES)}"
    )
    parser.add_argument("--tasks", type=int, help="tasks per enqueue/drain run")
    parser.add_argument(
        "--redis-url",
        help="use this Redis (its database is FLUSHED repeatedly) instead of a private "
        "redis-server",
    )
    parser.add_argument("--python", help="Python 3.12 used to create the environments")
    parser.add_argument(
        "--shadows-python",
        help="run shadows with this interpreter instead of scripts/benchmarks/.envs/shadows "
        "(it needs shadows and redis importable)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each library N times; cells are medians"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.* go")
    arguments = parser.parse_args()

    libraries = [name.strip() for name in arguments.libs.split(",") if name.strip()]
    unknown = [name for name in libraries if name not in SPECS]
    if unknown:
        parser.error(f"unknown libraries {unknown}; known: {', '.join(LIBRARIES)}")
    if arguments.quick:
        sizes = Sizes(1000, 100, 0.005, 500, 2.0, [1, 2, 4], 20.0)
    else:
        sizes = Sizes(20_000, 1000, 0.005, 5000, 3.0, [1, 2, 4], 30.0)
    if arguments.tasks:
        sizes.tasks = arguments.tasks

    pythons: dict[str, str] = {}
    needs_install = [
        lib for lib in libraries if not (lib == "shadows" and arguments.shadows_python)
    ]
    if needs_install:
        base = find_python312(arguments.python)
        print(f"environments (Python {base}):", flush=True)
        for lib in needs_install:
            pythons[lib] = ensure_env(lib, base)
    if arguments.shadows_python and "shadows" in libraries:
        pythons["shadows"] = arguments.shadows_python

    with contextlib.ExitStack() as stack:
        url = arguments.redis_url or stack.enter_context(private_redis())
        redis = Redis(url)
        server = redis.call("INFO", "server").decode()
        redis_version = next(
            (line.split(":", 1)[1] for line in server.splitlines() if "_version:" in line), "?"
        )
        report: dict[str, Any] = {
            "meta": {
                "command": "python scripts/benchmarks/run.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
                "python": "3.12",
                "redis_version": redis_version,
                "redis": "private redis-server" if not arguments.redis_url else url,
                "shadows_source": shadows_source(),
                "sizes": sizes.__dict__,
                "repeat": arguments.repeat,
            },
            "libraries": {},
        }
        for lib in libraries:
            print(f"{lib}:", flush=True)
            ctx = Context(lib, pythons[lib], url, redis, sizes)
            entry: dict[str, Any] = {}
            report["libraries"][lib] = entry
            try:
                info = subprocess.run(
                    ctx.harness("info"), capture_output=True, text=True, timeout=120
                )
                if info.returncode != 0:
                    raise RunFailed(f"cannot import: {last_line(info.stderr)}")
                ctx.info = json.loads(info.stdout.strip().splitlines()[-1])
                entry["info"] = ctx.info
                runs = []
                for number in range(arguments.repeat):
                    if arguments.repeat > 1:
                        print(f" run {number + 1} of {arguments.repeat}", flush=True)
                    runs.append(run_library(ctx))
                entry.update(combine(runs))
            except RunFailed as failure:
                entry["error"] = str(failure)
                entry["cells"] = {c.key: {"na": f"error: {failure}"} for c in COLUMNS}
                print(f"  {failure}")
        redis.close()

    report["ratios"] = ratios(report)
    print()
    print(render_table(report, markdown=False))
    print()
    print("\n".join(render_notes(report)))
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (arguments.output / "latest.md").write_text(render_markdown(report))
    print(f"\nwrote {arguments.output / 'latest.json'} and {arguments.output / 'latest.md'}")


if __name__ == "__main__":
    main()
