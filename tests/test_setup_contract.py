"""The set-up contract: the README's two commands, and CI running the same test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]


def test_the_readme_gives_the_quick_start_and_the_test_command() -> None:
    commands = readme_commands()
    assert any("docs/examples/quickstart.py" in c and "pip install ." in c for c in commands)
    assert any("pytest" in c and "'.[test]'" in c for c in commands)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_the_quick_start_example_runs_on_memory() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Welcome, Alice! (customer 12345)" in out
    assert "Welcome, Bob! (customer 67890)" in out
    assert out.count("Processing order 1") == 1
    assert "Reminder for 42: Thanks for upgrading!" in out
    assert "never sent" not in out
    assert "succeeded on attempt 3" in out
    assert "all done" in out
