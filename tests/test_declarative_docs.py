"""The declarative pages run as written: docs/declarative.md as a project (its files, a
producer and ``shadows worker``), the testing guide's plugin example under pytest, and
the deployment page's variables through the settings model."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_for
from shadows.settings import load_settings
from test_config_cli import run

DOCS = Path(__file__).parent.parent / "docs"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def files(page: str, language: str) -> dict[str, str]:
    """The blocks of ``page`` whose first line is ``# <path>``, by path."""
    found: dict[str, str] = {}
    for fence, body in FENCE.findall((DOCS / page).read_text()):
        first = body.splitlines()[0]
        named = first.startswith("# ") and ("/" in first or first.endswith(".toml"))
        if fence == language and named:
            found[first[2:].strip()] = body
    return found


async def test_the_declarative_page_runs_as_a_project(
    tmp_path: Path, redis_url: str, shadow_name: str
) -> None:
    sources = {**files("declarative.md", "python"), **files("declarative.md", "toml")}
    assert set(sources) == {"myapp/tasks.py", "myapp/signup.py", "shadows.toml"}
    for path, text in sources.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    config = tmp_path / "shadows.toml"
    config.write_text(
        config.read_text()
        .replace('"emails"', f'"{shadow_name}"')
        .replace("redis://localhost:6379/0", redis_url)
    )
    (tmp_path / "signup.py").write_text(
        "import asyncio\nfrom myapp.signup import on_signup\nasyncio.run(on_signup(1, 'Ann'))\n"
    )
    assert run(tmp_path, "signup.py").returncode == 0
    check = run(tmp_path, "config", "check")
    assert check.returncode == 0, check.stderr
    assert "retry={attempts = 8, delay = 30s} (file)" in " ".join(check.stdout.split())
    # The cleanup is due in an hour: stop the worker once the welcome email is out.
    output = tmp_path / "worker.log"
    with open(output, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "shadows", "worker", "--logging-format", "plain"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith(("SHADOW_", "PYTHON"))},
                "PYTHONUNBUFFERED": "1",  # the task prints: see it as it happens
            },
        )
    try:
        await wait_for(lambda: "Welcome, Ann! (customer 1)" in output.read_text(), 30, "the run")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    text = output.read_text()
    assert text.count("Welcome, Ann! (customer 1)") == 1
    assert "cleaning up" not in text


def test_the_testing_guide_plugin_example_passes(pytester: pytest.Pytester) -> None:
    sources = files("testing.md", "py")
    assert set(sources) == {"myapp/tasks.py", "tests/test_welcome.py"}
    for path, text in sources.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (pytester.path / "myapp" / "__init__.py").write_text("")
    (pytester.path / "shadows.toml").write_text('tasks = ["myapp.tasks"]\n')
    result = pytester.runpytest_subprocess("-o", "asyncio_mode=auto", "-o", "pythonpath=.")
    result.assert_outcomes(passed=2)


def test_the_deployment_variables_are_all_settings() -> None:
    text = (DOCS / "deployment.md").read_text()
    environ: dict[str, str] = {}
    for fence, body in FENCE.findall(text):
        if fence == "dockerfile":
            for name, value in re.findall(r"(SHADOW_\w+)=(\S+)", body):
                environ[name] = value
        if fence == "bash" and "docker run" in body:
            words = shlex.split(body.replace("\\\n", " "))
            environ.update(w.split("=", 1) for w in words if w.startswith("SHADOW_"))
    assert len(environ) >= 8
    loaded = load_settings(environ=environ, cwd=Path("/"))
    assert loaded.warnings == []
    assert loaded.settings.worker.concurrency == 20
    table = loaded.task_settings("send_welcome_email")
    assert table is not None and table.retry is not None and table.retry.attempts == 8
