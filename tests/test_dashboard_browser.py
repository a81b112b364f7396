"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
against a real Redis, a real worker process and ``shadows dashboard`` in its own process.

Screenshots go to a temporary folder, or to ``$SHADOWS_DASHBOARD_SCREENSHOTS`` (the docs'
images are taken with ``SHADOWS_DASHBOARD_SCREENSHOTS=docs/images/dashboard``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from dashboard_helpers import TOKEN, free_port
from processes import TESTS, spawn_worker
from shadows import Shadow
from worker_tasks import read_records

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="no chromium binary (apt-get install chromium) for the browser tests",
)

playwright_api = pytest.importorskip("playwright.async_api")


@dataclass
class Stack:
    shadow: Shadow
    base: str
    records: Path
    flag: Path
    log: Path
    page: playwright_api.Page
    shots: Path

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    async def login(self, name: str = "alice") -> None:
        await self.page.goto(f"{self.base}/login")
        await self.page.fill("input[name=name]", name)
        await self.page.fill("input[name=token]", TOKEN)
        await self.page.click("#login button")
        await self.page.wait_for_selector("text=Log out")


def spawn_dashboard(url: str, name: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(TESTS), environment.get("PYTHONPATH", "")])
    environment["SHADOW_DASHBOARD_TOKEN"] = TOKEN
    with open(log, "ab") as output:
        return subprocess.Popen(
            [
                sys.executable, "-m", "shadows", "dashboard",
                "--url", url, "--shadows", name, "--tasks", "dashboard_tasks:tasks",
                "--port", str(port), "--poll-interval", "200ms", "--logging-format", "plain",
            ],
            stdout=output, stderr=subprocess.STDOUT, cwd=TESTS, env=environment,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and a second one for a worker still running a task (cancels it)."""
    for grace in (2, 10):
        process.terminate()
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHADOWS_DASHBOARD_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def stack(redis_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    name = f"browser-{uuid.uuid4().hex[:8]}"
    shots = screenshots(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    worker = spawn_worker(
        redis_url, name, "--name", "worker-1", "--concurrency", "4",
        log=tmp_path / "worker.log", tasks="dashboard_tasks:tasks",
    )  # fmt: skip
    dashboard = spawn_dashboard(redis_url, name, port, log)
    try:
        async with Shadow(name=name, url=redis_url) as shadow, httpx.AsyncClient() as client:
            shadow.register_collection("dashboard_tasks:tasks")

            async def serving() -> bool:
                assert dashboard.poll() is None, log.read_text()
                try:
                    return (await client.get(f"{base}/api/state")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(serving, timeout=30, message="the dashboard to serve")
            await wait_for(shadow.workers, timeout=30, message="the worker to beat")
            async with playwright_api.async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 860})
                page.on("dialog", lambda dialog: dialog.accept())
                yield Stack(shadow, base, tmp_path / "runs", tmp_path / "flag", log, page, shots)
                await browser.close()
            await shadow.clear()
    finally:
        stop(worker)
        stop(dashboard)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_the_overview_updates_live_without_reload(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    await page.goto(f"{stack.base}/")
    await page.wait_for_selector("#chart-throughput canvas")
    assert await page.inner_text("#gauge-scheduled") == "0"
    async with shadow.batch() as batch:
        for n in range(25):
            batch.add("greet", when=later(3600 + n), key=f"later-{n}")(str(stack.records), f"p{n}")
    for n in range(40):
        await shadow.add("greet")(str(stack.records), f"now-{n}")
    await shadow.add("dawdle", key="a-long-nap")(60)
    await page.wait_for_function("document.getElementById('gauge-scheduled').textContent === '25'")
    await page.wait_for_function("document.getElementById('gauge-running').textContent === '1'")
    await page.wait_for_function(
        "[...document.querySelectorAll('#tasks tbody tr')].some(r => "
        "r.cells[0].textContent === 'greet' && r.cells[2].textContent === '40')",
        timeout=20_000,
    )
    ticks = int(await page.get_attribute("body", "data-ticks") or 0)
    await page.wait_for_function(f"Number(document.body.dataset.ticks) > {ticks + 2}")
    assert page.url == f"{stack.base}/"  # never reloaded
    await stack.shot("overview")
    await page.goto(f"{stack.base}/running")
    await page.wait_for_selector("#running tr[data-key='a-long-nap']")
    assert await page.inner_text("#running tr[data-key='a-long-nap'] td:nth-child(3)") == "worker-1"
    await stack.shot("running")
    await page.goto(f"{stack.base}/workers")
    await page.wait_for_selector("#workers tr[data-name='worker-1']")
    await stack.shot("workers")


async def test_striking_a_task_from_the_page_makes_the_worker_skip_it(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    await stack.login("alice")
    await page.goto(f"{stack.base}/strikes")
    await page.fill("#strike-form input[name=task]", "greet")
    await page.fill("#strike-form input[name=parameter]", "name")
    await page.fill("#strike-form input[name=value]", "'mallory'")
    await page.click("#strike-form button")
    await page.wait_for_selector("#notice.ok")
    assert "greet(name == 'mallory')" in await page.inner_text("#strikes")
    await stack.shot("strikes")

    skipped = await shadow.add("greet", key="for-mallory")(str(stack.records), "mallory")
    ran = await shadow.add("greet", key="for-bob")(str(stack.records), "bob")

    async def settled() -> bool:
        return await shadow.task_state(skipped.key) == "stricken" and bool(
            await shadow.task_state(ran.key) == "completed"
        )

    await wait_for(settled, timeout=20, message="the worker to skip mallory and greet bob")
    assert [words[:2] for words in read_records(stack.records)] == [["greet", "bob"]]
    assert "alice (session from 127.0.0.1): struck greet(name == 'mallory')" in (
        stack.log.read_text()
    )
    await page.click("#strikes button[data-action=restore]")
    await page.wait_for_selector("text=No strike in effect.")
    assert await shadow.strikes() == []


async def test_retrying_a_dead_letter_from_the_page_runs_it(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    stack.flag.write_text("up")
    await shadow.add("fragile", key="fragile-1")(str(stack.records), str(stack.flag))
    await wait_for(lambda: shadow.failed_task("fragile-1"), timeout=20, message="the dead letter")
    await stack.login("bob")
    await page.goto(f"{stack.base}/task?key=fragile-1")
    assert "RuntimeError: the flag is up" in await page.inner_text("#traceback")
    await stack.shot("dead-letter")
    stack.flag.unlink()
    await page.goto(f"{stack.base}/failed")
    await page.click("#failed tr[data-key='fragile-1'] button[data-action=retry]")
    await page.wait_for_selector("#notice.ok")

    async def ran() -> bool:
        return ["fragile", "ok"] in read_records(stack.records)

    await wait_for(ran, timeout=20, message="the retried task to run")
    assert await shadow.failed_task("fragile-1") is None
    assert "bob (session from 127.0.0.1): retried dead letter 'fragile-1'" in stack.log.read_text()


async def test_cancelling_a_scheduled_task_from_the_page(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    for n in range(3):
        await shadow.add("greet", when=later(3600 + n), key=f"reminder-{n}")(
            str(stack.records), f"r{n}"
        )
    await stack.login()
    await page.goto(f"{stack.base}/scheduled?q=reminder")
    await stack.shot("scheduled")
    await page.click("#scheduled tr[data-key='reminder-1'] button[data-action=cancel]")
    await page.wait_for_selector("#notice.ok")
    assert await page.locator("#scheduled tr[data-key='reminder-1']").count() == 0
    assert await shadow.task_state("reminder-1") == "cancelled"
    assert await shadow.task_state("reminder-0") == "scheduled"


async def test_a_running_tasks_progress_bar_advances(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    await shadow.add("crawl", key="crawl-1")(str(stack.records), 60, 0.2)
    await page.goto(f"{stack.base}/running")
    bar = "#running tr[data-key='crawl-1'] progress"
    await page.wait_for_function(
        f'(document.querySelector("{bar}") || {{}}).value > 0', timeout=20_000
    )
    assert await page.get_attribute(bar, "max") == "60"
    first = float(await page.eval_on_selector(bar, "bar => bar.value"))
    await page.wait_for_function(
        f'document.querySelector("{bar}").value > {first + 2}', timeout=20_000
    )
    assert page.url == f"{stack.base}/running"  # live, never reloaded
    assert "crawling" in await page.inner_text("#running tr[data-key='crawl-1'] td.progress")
    await stack.shot("running-progress")
    await page.goto(f"{stack.base}/task?key=crawl-1")
    assert "/60 crawling" in await page.inner_text("#progress")
    assert await shadow.cancel("crawl-1")


async def test_cancelling_a_running_task_from_the_page_stops_it(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    await shadow.add("crawl", key="crawl-2")(str(stack.records), 600, 0.2)
    await stack.login()
    await page.goto(f"{stack.base}/running")
    button = "#running tr[data-key='crawl-2'] button[data-action=cancel]"
    await page.wait_for_selector(button, timeout=20_000)
    await page.click(button)
    await page.wait_for_selector("#notice.ok")

    async def cancelled() -> bool:
        found = await shadow.get_execution("crawl-2")
        return found is not None and str(found.state) == "cancelled"

    await wait_for(cancelled, timeout=10, message="the running task to be cancelled")
    await wait_for(
        lambda: ["crawl", "cancelled"] in read_records(stack.records),
        message="the worker to stop the task",
    )
    await page.wait_for_selector("#running tr[data-key='crawl-2']", state="detached")
    assert "cancelled task 'crawl-2'" in stack.log.read_text()


async def test_an_action_without_the_token_is_refused(stack: Stack) -> None:
    page, shadow = stack.page, stack.shadow
    await shadow.add("greet", when=later(3600), key="keep-me")(str(stack.records), "k")
    await page.goto(f"{stack.base}/scheduled")
    assert await page.locator("button[data-action=cancel]").count() == 0  # nothing to click
    post = """async (url) => (await fetch(url, {method: "POST", body: new URLSearchParams(
        {key: "keep-me"}), credentials: "include"})).status"""
    assert await page.evaluate(post, f"{stack.base}/actions/cancel") == 401
    await stack.login()
    assert await page.evaluate(post, f"{stack.base}/actions/cancel") == 403  # no CSRF token
    # Another site (the same server under another name) cannot act for the logged-in user.
    await page.goto(stack.base.replace("127.0.0.1", "localhost") + "/scheduled")
    status = await page.evaluate(
        """async (url) => { try { await fetch(url, {method: "POST", mode: "no-cors",
           credentials: "include", body: new URLSearchParams({key: "keep-me"})}); }
           catch (e) {} return true; }""",
        f"{stack.base}/actions/cancel",
    )
    assert status is True

    async def refused() -> bool:
        return stack.log.read_text().count("Refused cancel") >= 3

    await wait_for(refused, message="the cross-site request to be refused")
    assert await shadow.task_state("keep-me") == "scheduled"
