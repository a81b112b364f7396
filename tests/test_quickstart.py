"""Every code block of docs/getting-started.md runs as written.

The Python blocks run in order in one namespace (like a notebook, top-level ``await``
allowed), on real Redis and on memory://. Where the text assumes something it does not
define (a FastAPI ``app``, an ``http_client``, an open ``shadows``, ``send_reminder``,
``customer_id``), the namespace provides a stand-in. ``SHADOW_URL``/``SHADOW_NAME`` point
``Shadow()`` at the test's server; the one block that spells out
``redis://localhost:6379/0`` is pointed there too. The shell blocks (``tasks.py`` and the
``shadows worker`` command) run in a subprocess against real Redis: memory:// lives inside
one process by design.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from shadows import Shadow, Worker

DOC = Path(__file__).parent.parent / "docs" / "getting-started.md"
LOCAL_URL = 'url="redis://localhost:6379/0"'


def blocks(language: str | None = None) -> list[tuple[str, str]]:
    found = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return [(lang, code) for lang, code in found if language is None or lang == language]


def python_blocks() -> list[str]:
    return [code for lang, code in blocks("python")]


async def run_block(source: str, namespace: dict[str, Any], name: str) -> None:
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        await result


class FakeApp:
    """Stands in for a FastAPI application: ``@app.post(path)`` keeps the function."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[..., Any]] = {}

    def post(self, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.routes[path] = function
            return function

        return register


class FakeResponse:
    status_code = 200


class FakeHTTPClient:
    def __init__(self) -> None:
        self.requests: list[str] = []

    async def get(self, url: str) -> FakeResponse:
        self.requests.append(url)
        return FakeResponse()


def test_the_quick_start_has_the_expected_blocks() -> None:
    languages = [lang for lang, _ in blocks()]
    assert languages.count("python") == 7
    assert python_blocks()[0].count(LOCAL_URL) == 1


async def test_python_blocks_run_as_written(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"quickstart-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHADOW_URL", url)
    monkeypatch.setenv("SHADOW_NAME", name)
    sources = python_blocks()
    http_client = FakeHTTPClient()
    app = FakeApp()

    async def send_reminder(customer_id: int, message: str) -> None:
        print(f"Reminder for {customer_id}: {message}")

    namespace: dict[str, Any] = {
        "__name__": "quickstart",
        "app": app,
        "http_client": http_client,
        "send_reminder": send_reminder,
        "customer_id": 4242,
    }
    printed = ""

    def output() -> str:
        nonlocal printed
        printed += capsys.readouterr().out
        return printed

    try:
        # 1. first shadow: one immediate and one future email on the "emails" shadow
        await run_block(sources[0].replace(LOCAL_URL, f'url="{url}"'), namespace, "block-1")
        async with Shadow(name="emails", url=url) as emails:
            assert await emails.client.zcard(emails.keys.queue) == 1  # tomorrow's
            emails.register(namespace["send_welcome_email"])
            worker = Worker(emails)
            running = asyncio.create_task(worker.run_forever())
            await wait_for(lambda: "Welcome, Alice! (customer 12345)" in output(), 10)
            worker.stop()
            await running
            await emails.clear()

        # 2-3. random keys, then an idempotent custom key
        await run_block(sources[1], namespace, "block-2")
        await run_block(sources[2], namespace, "block-3")

        async with Shadow() as shadows:
            assert await shadows.client.xlen(shadows.keys.stream) == 4  # 3 + 1 (deduplicated)
            namespace["shadows"] = shadows
            # 4. the web endpoint: calling it twice schedules one task
            await run_block(sources[3], namespace, "block-4")
            endpoint = app.routes["/orders/{order_id}/process"]
            assert await endpoint(777) == {"status": "scheduled"}
            assert await endpoint(777) == {"status": "scheduled"}
            assert await shadows.client.xlen(shadows.keys.stream) == 5
            # 5. schedule, replace and cancel a reminder
            await run_block(sources[4], namespace, "block-5")
            assert await shadows.client.zcard(shadows.keys.queue) == 0
            # the reminder is gone; its record says why until execution_ttl passes
            assert await shadows.task_state(f"reminder-{namespace['customer_id']}") == "cancelled"

        # 6. the worker: runs until interrupted
        running = asyncio.create_task(run_block(sources[5], namespace, "block-6"))
        await wait_for(lambda: "Processing order 12345" in output(), 10)
        await wait_for(lambda: "Processing order 777" in output(), 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

        # 7. retries: define the task, then run it
        await run_block(sources[6], namespace, "block-7")
        async with Shadow() as shadows:
            await shadows.add(namespace["flaky_api_call"])("https://example.com/health")
            async with Worker(shadows) as worker:
                await worker.run_until_finished()
        assert "Success on attempt 1" in output()
        assert http_client.requests == ["https://example.com/health"]
    finally:
        for shadow_name in (name, "emails"):
            async with Shadow(name=shadow_name, url=url) as shadow:
                keys = [k async for k in shadow.client.scan_iter(match=f"{shadow.keys.prefix}*")]
                if keys:
                    await shadow.client.delete(*keys)


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "shadows"
    return [str(script)] if script.exists() else [sys.executable, "-m", "shadows"]


async def test_cli_blocks_run_as_written(redis_url: str, tmp_path: Path) -> None:
    shell = [code for lang, code in blocks("bash")]
    tasks_source = next(code for code in shell if code.startswith("# In tasks.py"))
    command = next(code for code in shell if code.strip().startswith("shadows worker"))
    (tmp_path / "tasks.py").write_text(tasks_source)

    name = f"cli-quickstart-{uuid.uuid4().hex[:8]}"
    environment = {**os.environ, "SHADOW_URL": redis_url, "SHADOW_NAME": name}
    environment["PYTHONUNBUFFERED"] = "1"
    log = tmp_path / "worker.log"
    argv = shlex.split(command.strip())
    with open(log, "wb") as output:
        process = subprocess.Popen(
            _console_script() + argv[1:],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        spec = importlib.util.spec_from_file_location("quickstart_tasks", tmp_path / "tasks.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        async with Shadow(name=name, url=redis_url) as shadows:
            await shadows.add(module.process_order)(42)
            await shadows.add(module.send_notification)("hello")
            await wait_for(
                lambda: (
                    "Processing order 42" in log.read_text()
                    and "Notification: hello" in log.read_text()
                ),
                20,
                "the CLI worker to run both tasks",
            )
            assert "concurrency 5" in log.read_text()
            process.send_signal(signal.SIGTERM)
            await wait_for(lambda: process.poll() is not None, 20, "the worker to exit")
            assert process.returncode == 0
            keys = [k async for k in shadows.client.scan_iter(match=f"{shadows.keys.prefix}*")]
            await shadows.client.delete(*keys)
    finally:
        process.kill()


def test_the_code_blocks_are_the_seed_quick_starts() -> None:
    """docs/getting-started.md is the user's quick start: its prose may be corrected, its
    code blocks stay exactly as given (checked when the seed is at hand)."""
    seed = Path(__file__).parent.parent.parent / "shared" / "seed" / "getting-started.md"
    if not seed.exists():
        pytest.skip("the seed quick start is not next to this checkout")
    ours = re.findall(r"```.*?```", DOC.read_text(), flags=re.DOTALL)
    theirs = re.findall(r"```.*?```", seed.read_text(), flags=re.DOTALL)
    assert ours == theirs
