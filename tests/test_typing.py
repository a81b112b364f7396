"""Types flow through ``@shadow.task``: mypy --strict accepts the right calls of a handle
and rejects the wrong ones (tests/typecheck/declared_tasks.py marks each expected error)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_mypy_accepts_the_right_calls_and_rejects_the_wrong_ones() -> None:
    checked = ROOT / "tests" / "typecheck" / "declared_tasks.py"
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores",
            "--no-incremental", "--cache-dir", "/dev/null", "--config-file", "", str(checked),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout
    rejected = checked.read_text().split("async def rejected")[1]
    assert rejected.count("# type: ignore[") == 7
