"""Worker subprocesses for tests that kill, stop or restart things."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def spawn_worker(
    url: str,
    shadow: str,
    *args: str,
    log: Path,
    tasks: str = "worker_tasks:tasks",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m shadows worker`` in its own process, logging to ``log``."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), environment.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    environment.update(env or {})
    with open(log, "ab") as output:
        return subprocess.Popen(
            [
                sys.executable, "-m", "shadows", "worker",
                "--url", url,
                "--shadows", shadow,
                "--tasks", tasks,
                "--logging-format", "plain",
                *args,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=TESTS,
            env=environment,
        )  # fmt: skip
