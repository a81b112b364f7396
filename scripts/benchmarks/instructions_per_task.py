"""Instructions per task of versions of shadows: the client's CPU work, counted, not timed.

    python scripts/benchmarks/instructions_per_task.py \
        --version old=../old/.venv/bin/python --version new=.venv/bin/python

Timing a few hundred microseconds of CPU per task on a shared virtual machine swings by
±30 % from one round to the next (``cpu_per_task.py`` shows it), far more than the few
per cent a change in a hot path makes. The number of machine instructions a process
executes hardly moves: this script runs each version's producer and worker under
Valgrind's ``cachegrind`` (``apt-get install valgrind``), which counts them, and takes
differences so that only the per-task part is left:

* add: ``(I(add n2) - I(add n1)) / (n2 - n1)``: one ``add()`` of a task without options;
* drain: the same for one worker (concurrency 10) draining what was added, its start and
  stop cancelled out by the difference of two sizes.

The process runs some 50 times slower under Valgrind, so Redis answers relatively sooner
than it would: reads return fuller batches than at full speed. Both versions are measured
the same way, so their ratio is the figure to read; the absolute counts are not those of
a process at full speed. Redis's own work is not counted here: see the commands per task
of ``cpu_per_task.py`` and ``commands_per_task.py``. Only the standard library is needed
to run this script; each version's Python needs shadows installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor

from cpu_per_task import noop, start_redis, version_option, warm_up


async def child(url: str, tasks: int, drain: bool) -> None:
    """Warm up, add ``tasks`` one by one, and drain them when ``drain``."""
    from shadows import Shadow, Worker

    async with Shadow(name=f"ins-{uuid.uuid4().hex[:8]}", url=url) as shadow:
        await warm_up(shadow)
        for n in range(tasks):
            await shadow.add(noop)(n)
        if drain:
            async with Worker(shadow, concurrency=10) as worker:
                await worker.run_until_finished()


COUNTING = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")


def counted(stderr: str, what: str) -> int:
    """The instruction count Valgrind printed on ``stderr``."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if found is None:
        raise SystemExit(f"{what}: Valgrind printed no count\n{stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def child_command(python: str, url: str, tasks: int, drain: bool) -> list[str]:
    command = [python, __file__, "--child", "--url", url, "--tasks", str(tasks)]
    return command + (["--drain"] if drain else [])


def client_instructions(python: str, url: str, tasks: int, drain: bool) -> int:
    """The instructions one child run executes (Valgrind's count)."""
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [*COUNTING, *child_command(python, url, tasks, drain)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{python}: the measured run failed\n{done.stderr[-2000:]}")
    return counted(done.stderr, python)


def server_instructions(python: str, tasks: int, drain: bool) -> int:
    """The instructions a redis-server of its own executes while one child run (at full
    speed) uses it, from its start to its shutdown."""
    with tempfile.TemporaryDirectory() as directory:
        server, port = start_redis(directory, wrapper=COUNTING, wait=120)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            subprocess.run(child_command(python, url, tasks, drain), check=True)
            with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
                connection.sendall(b"SHUTDOWN NOSAVE\r\n")
                connection.recv(100)
            _, stderr = server.communicate(timeout=300)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
    return counted(stderr.decode(errors="replace"), "redis-server")


def measure(
    python: str, url: str, small: int, large: int, repeat: int, side: str
) -> dict[str, float]:
    """Per-task instructions of add and drain for one version (medians of ``repeat``),
    of the client process (``side="client"``) or of the Redis server."""
    adds: list[float] = []
    drains: list[float] = []
    for _ in range(repeat):
        runs = {
            (size, drain): (
                client_instructions(python, url, size, drain)
                if side == "client"
                else server_instructions(python, size, drain)
            )
            for size in (small, large)
            for drain in (False, True)
        }
        span = large - small
        adds.append((runs[large, False] - runs[small, False]) / span)
        large_drain = runs[large, True] - runs[large, False]
        drains.append((large_drain - (runs[small, True] - runs[small, False])) / span)
    return {"add": sorted(adds)[len(adds) // 2], "drain": sorted(drains)[len(drains) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    version_option(parser)
    parser.add_argument("--small", type=int, default=500, help="tasks of the smaller run")
    parser.add_argument("--large", type=int, default=1500, help="tasks of the larger run")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per version")
    parser.add_argument(
        "--side",
        choices=("client", "server", "both"),
        default="both",
        help="count the client process's instructions, the Redis server's, or both",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        asyncio.run(child(arguments.url, arguments.tasks, arguments.drain))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    versions = dict(pair.partition("=")[::2] for pair in arguments.version)
    if len(versions) < 2 or not all(versions.values()):
        raise SystemExit("give at least two --version LABEL=PYTHON to compare")
    with tempfile.TemporaryDirectory() as directory:
        server, port = start_redis(directory)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            sides = ("client", "server") if arguments.side == "both" else (arguments.side,)
            sizes = (arguments.small, arguments.large, arguments.repeat)
            with ThreadPoolExecutor(min(len(versions), os.cpu_count() or 1)) as pool:
                futures = {
                    (label, side): pool.submit(measure, python, url, *sizes, side)
                    for side in sides
                    for label, python in versions.items()
                }
                results = {key: future.result() for key, future in futures.items()}
        finally:
            server.terminate()
            server.wait(10)
    first = next(iter(versions))
    others = list(versions)[1:]
    print(f"\ninstructions per task ({arguments.small} and {arguments.large} tasks)")
    header = "".join(f"{label:>14}" for label in versions)
    print(f"{'measure':<32}{header}" + "".join(f"{o + '/' + first:>14}" for o in others))
    for side in sides:
        for key, name in (("add", "add"), ("drain", "drain c10")):
            row = {label: results[label, side][key] for label in versions}
            cells = "".join(f"{row[label]:>14,.0f}" for label in versions)
            ratios = "".join(f"{row[o] / row[first]:>14.3f}" for o in others)
            print(f"{name + ': ' + side:<32}{cells}{ratios}")


if __name__ == "__main__":
    main()
