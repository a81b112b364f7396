"""The dashboard's pages and readings, in process, on both backends (see
test_dashboard_actions.py for acting and test_dashboard_browser.py for a real browser)."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from conftest import wait_for
from dashboard_helpers import TOKEN, listening, serve, settings
from redis_server import RedisProcess
from shadows import Logged, Shadow, Worker
from shadows.cli import main
from shadows.dashboard import Dashboard, DashboardSettings, SettingsError
from shadows.dashboard.history import History, Totals
from shadows.dashboard.pulse import Pulse, WorkerView
from shadows.operations.tally import parse_tally


async def pay(
    order: Annotated[str, Logged], card: str, items: Annotated[list[str], Logged]
) -> None:
    if order.startswith("refused"):
        raise ValueError(f"order {order} refused")


class Receipt:
    """A result class the dashboard may decode only while its module is loaded."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __repr__(self) -> str:
        return f"Receipt(total={self.total})"


async def total(prices: list[int]) -> int:
    return sum(prices)


async def report(size: int) -> str:
    return "<b>" + "x" * size


async def receipt(amount: int) -> Receipt:
    return Receipt(amount)


async def quiet() -> int:
    return 7


async def nap(seconds: float) -> None:
    await asyncio.sleep(seconds)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# -- settings ---------------------------------------------------------------------------


def test_settings_come_from_flags_then_environment_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "shadows.toml"
    config.write_text('[dashboard]\nport = 9001\nhost = "0.0.0.0"\nhistory = "30m"\nname = "f"\n')
    monkeypatch.setenv("SHADOW_DASHBOARD_PORT", "9002")
    monkeypatch.setenv("SHADOW_NAME", "from-env")
    monkeypatch.setenv("SHADOW_TASKS", "a:b, c:d")
    loaded = DashboardSettings.load(config)
    assert (loaded.port, loaded.host, loaded.history) == (9002, "0.0.0.0", timedelta(minutes=30))
    assert loaded.name == "from-env"
    assert loaded.tasks == ["a:b", "c:d"]
    assert loaded.token is None and not loaded.actions_allowed
    flagged = DashboardSettings.load(config, port=9003, name="flag", token=TOKEN)
    assert (flagged.port, flagged.name) == (9003, "flag")
    assert flagged.token is not None and flagged.token.get_secret_value() == TOKEN
    monkeypatch.chdir(tmp_path)  # ./shadows.toml is read without --config
    monkeypatch.delenv("SHADOW_DASHBOARD_PORT")
    assert DashboardSettings.load().port == 9001


def test_bad_settings_say_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "shadows.toml"
    config.write_text("[dashboard]\nprot = 1\n")
    with pytest.raises(SettingsError, match=r"'prot' from .*shadows.toml \[dashboard\]: unknown"):
        DashboardSettings.load(config)
    monkeypatch.setenv("SHADOW_DASHBOARD_POLL_INTERVAL", "5ms")
    with pytest.raises(SettingsError, match=r"\$SHADOW_DASHBOARD_POLL_INTERVAL: must be between"):
        DashboardSettings.load()
    with pytest.raises(SettingsError, match=r"'token' from the token given: .*8 characters"):
        DashboardSettings.load(poll_interval="1s", token="short")
    with pytest.raises(SettingsError, match="not found"):
        DashboardSettings.load(tmp_path / "missing.toml")
    config.write_text("[dashboard\n")
    with pytest.raises(SettingsError, match="cannot read the settings file"):
        DashboardSettings.load(config)


# -- readings and pages -----------------------------------------------------------------


async def test_the_overview_shows_the_depths_dead_letters_and_strikes(shadow: Shadow) -> None:
    shadow.register(pay)
    for n in range(3):
        await shadow.add(pay, when=later(600))(f"o-{n}", "4111", [])
    for n in range(2):
        await shadow.add(pay)(f"now-{n}", "4111", [])
    await shadow.strike("nap")
    async with serve(shadow) as (_, client):
        page = (await client.get("/")).text
        state = (await client.get("/api/state")).json()
    assert 'id="gauge-scheduled">3<' in page
    assert 'id="gauge-ready">2<' in page
    assert state["gauges"] == {
        "ready": 2, "scheduled": 3, "running": 0, "workers": 0, "dead_letters": 0, "strikes": 1,
    }  # fmt: skip


async def test_running_tasks_and_workers_show_who_runs_what(shadow: Shadow) -> None:
    shadow.register(nap)
    execution = await shadow.add(nap, key="long-nap")(30)
    async with Worker(shadow, name="napper", concurrency=2) as worker:
        running = asyncio.create_task(worker.run_forever())
        try:
            async with serve(shadow) as (dashboard, client):

                async def listed() -> bool:
                    pulse = dashboard.poller.pulse
                    return bool(pulse and pulse.running and pulse.workers)

                await wait_for(listed, message="the running task and the worker")
                running_page = (await client.get("/running")).text
                workers_page = (await client.get("/workers")).text
                tick = (await client.get("/api/state")).json()
        finally:
            worker.stop(force=True)
            await running
    assert "long-nap" in running_page and "napper" in running_page
    [task] = tick["running"]
    assert (task["key"], task["function"], task["worker"]) == ("long-nap", "nap", "napper")
    assert task["progress"] is None  # filled once tasks report progress (issue 13)
    [seen] = tick["workers"]
    assert seen["host"] == socket.gethostname()
    assert seen["concurrency"] == 2 and "nap" in seen["tasks"]
    assert seen["now"] == [{"key": execution.key, "function": "nap"}]
    assert socket.gethostname() in workers_page


async def test_throughput_and_task_counts_come_from_the_workers_heartbeats(
    shadow: Shadow,
) -> None:
    shadow.register(pay)
    async with serve(shadow) as (dashboard, client):
        await wait_for(lambda: dashboard.poller.readings >= 1, message="a first reading")
        for n in range(4):
            await shadow.add(pay)(f"ok-{n}", "4111", [])
        await shadow.add(pay)("refused-1", "4111", [])
        async with Worker(shadow, heartbeat_interval=timedelta(milliseconds=50)) as worker:
            serving = asyncio.create_task(worker.run_forever())

            def counted() -> bool:
                pulse = dashboard.poller.pulse
                rows = dashboard.poller.task_table(pulse)["rows"] if pulse else []
                return any(row["name"] == "pay" and row["started"] == 5 for row in rows)

            # Counts reach the dashboard with the worker's heartbeats, while it lives.
            await wait_for(counted, message="the worker's tally to be read")
            worker.stop()
            await serving
        rows = {r["name"]: r for r in (await client.get("/api/state")).json()["tasks"]["rows"]}
        points = dashboard.poller.history.points()
    assert {k: rows["pay"][k] for k in ("started", "succeeded", "failed", "retried")} == {
        "started": 5, "succeeded": 4, "failed": 1, "retried": 0,
    }  # fmt: skip
    assert max(point[4] for point in points) > 0  # runs started per second
    assert max(point[6] for point in points) > 0  # failed per second


def _worker(name: str, started: int, **tally: tuple[int, ...]) -> WorkerView:
    return WorkerView(name, "h", 1, 0, started, started, (), tally)


def test_totals_count_only_what_workers_did_while_watched() -> None:
    totals = Totals()
    totals.absorb([_worker("old", 1_000, t=(100, 90, 5, 5, 0, 1000))], now_ms=100_000)
    assert totals.sums()[0] == 0  # there before we looked: a baseline
    totals.absorb([_worker("old", 1_000, t=(110, 99, 5, 6, 0, 1500))], now_ms=101_000)
    assert totals.by_task["t"][:4] == [10, 9, 0, 1]
    # A newcomer counts in full; a restarted worker (same name, new start) too.
    totals.absorb(
        [
            _worker("old", 102_000, t=(3, 3, 0, 0, 0, 0)),
            _worker("new", 101_500, t=(2, 2, 0, 0, 0, 0)),
        ],
        now_ms=102_500,
    )
    assert totals.by_task["t"][0] == 15
    # A worker that vanished (an outage) and comes back is not counted twice.
    totals.absorb([_worker("new", 101_500, t=(2, 2, 0, 0, 0, 0))], now_ms=103_000)
    totals.absorb(
        [
            _worker("old", 102_000, t=(4, 4, 0, 0, 0, 0)),
            _worker("new", 101_500, t=(2, 2, 0, 0, 0, 0)),
        ],
        now_ms=104_000,
    )
    assert totals.by_task["t"][0] == 16


def test_history_rates_are_taken_over_the_window() -> None:
    history = History(span_ms=60_000, interval_ms=1_000, window_ms=10_000)
    for second in range(30):
        workers = (_worker("w", 0, t=(second * 5, second * 4, 0, second, 0, second * 5 * 20)),)
        history.record(Pulse(1_000_000 + second * 1000, 0, 0, 0, 0, 0, (), workers))
    *_, started, succeeded, failed, lateness = history.points()[-1]
    assert (started, succeeded, failed) == (5.0, 4.0, 1.0)
    assert lateness == pytest.approx(0.02)
    assert len(history.points()) == 30 and history.latest_point() == history.points()[-1]


async def test_scheduled_tasks_are_paged_on_the_server_and_searchable(shadow: Shadow) -> None:
    shadow.register(pay)
    shadow.register(nap)
    async with shadow.batch() as batch:
        for n in range(120):
            task, arguments = (nap, (1,)) if n % 10 == 0 else (pay, (f"o{n}", "c", []))
            batch.add(task, when=later(60 + n), key=f"key-{n:03d}")(*arguments)
    async with serve(shadow, page_size=50) as (_, client):
        first = (await client.get("/scheduled")).text
        last = (await client.get("/scheduled", params={"start": 100})).text
        naps = (await client.get("/scheduled", params={"task": "nap"})).text
        found = (await client.get("/scheduled", params={"q": "key-07"})).text
        none = (await client.get("/scheduled", params={"q": "no-such"})).text
    assert "key-000" in first and "key-049" in first and "key-050" not in first
    assert "1–50 of 120" in first and 'href="/scheduled?start=50"' in first
    assert "key-100" in last and "key-119" in last and "key-099" not in last
    assert [f"key-{n:03d}" for n in range(0, 120, 10)] == _keys(naps)
    assert _keys(found) == [f"key-07{n}" for n in range(10)]
    assert "No match." in none


def _keys(page: str) -> list[str]:
    return [part.split('"')[0] for part in page.split('<tr data-key="')[1:]]


async def test_a_task_page_shows_only_the_logged_arguments(shadow: Shadow) -> None:
    shadow.register(pay)
    await shadow.add(pay, when=later(600), key="order-1")("o-1", "4111-1111", ["a", "b"])
    async with serve(shadow) as (_, client):
        shown = (await client.get("/task", params={"key": "order-1"})).text
        missing = await client.get("/task", params={"key": "nobody"})
    assert "pay(&#39;o-1&#39;, ..., [&#39;a&#39;, &#39;b&#39;])" in shown
    assert "4111" not in shown
    assert "scheduled" in shown and "message in the queue" in shown
    assert missing.status_code == 404 and "No task with this key" in missing.text
    # A dashboard without the task never decodes its arguments.
    async with Shadow(name=shadow.name, url=shadow.url) as stranger, serve(stranger) as (_, client):
        hidden = (await client.get("/task", params={"key": "order-1"})).text
    assert "not registered in this dashboard" in hidden and "o-1" not in hidden


async def test_a_dead_letter_page_has_the_error_and_traceback(shadow: Shadow) -> None:
    shadow.register(pay)
    await shadow.add(pay, key="bad-order")("refused-9", "4111", [])
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    async with serve(shadow) as (_, client):
        listing = (await client.get("/failed")).text
        detail = (await client.get("/task", params={"key": "bad-order"})).text
    assert "bad-order" in listing and "ValueError: order refused-9 refused" in listing
    assert 'id="traceback"' in detail and "raise ValueError" in detail
    assert "message in the dead letters" in detail


async def test_a_task_page_shows_the_result_capped_and_escaped(shadow: Shadow) -> None:
    shadow.register(total)
    shadow.register(report)
    shadow.register(pay)
    shadow.task(results=False)(quiet)
    await shadow.add(total, key="sum-1")([5, 10, 20])
    await shadow.add(report, key="big-1")(20_000)
    await shadow.add(pay, key="bad-1")("refused-1", "4111", [])
    await shadow.add(quiet, key="quiet-1")()
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    async with serve(shadow) as (_, client):
        summed = (await client.get("/task", params={"key": "sum-1"})).text
        big = (await client.get("/task", params={"key": "big-1"})).text
        failed = (await client.get("/task", params={"key": "bad-1"})).text
        kept_none = (await client.get("/task", params={"key": "quiet-1"})).text
    assert '<dd id="result"><code>35</code></dd>' in summed
    assert "&lt;b&gt;" in big and "<b>xxx" not in big
    assert "x" * 3000 in big and "x" * 4000 not in big and "…" in big
    assert 'id="result"' not in failed
    assert "ValueError: order refused-1 refused" in failed and 'id="traceback"' in failed
    assert "Not stored" in kept_none and "7</code>" not in kept_none


async def test_a_result_that_cannot_be_decoded_safely_is_a_placeholder(
    redis_url: str,
) -> None:
    name = f"results-{socket.gethostname()}-{id(object())}"
    async with Shadow(name=name, url=redis_url) as shadow:
        shadow.register(receipt)
        shadow.register(total)
        await shadow.add(receipt, key="receipt-1")(12)
        await shadow.add(total, key="sum-2")([1, 2])
        async with Worker(shadow) as worker:
            await worker.run_until_finished()
        async with serve(shadow) as (_, client):
            shown = (await client.get("/task", params={"key": "receipt-1"})).text
        assert "Receipt(total=12)" in shown
        # Its class's module not loaded here: named, not imported.
        data = await shadow.client.hget(shadow.keys.run("receipt-1"), "result")
        assert isinstance(data, bytes)
        await shadow.client.hset(
            shadow.keys.run("receipt-1"),
            "result",
            data.replace(b"test_dashboard", b"nope_dashboard"),
        )
        async with serve(shadow) as (_, client):
            hidden = await client.get("/task", params={"key": "receipt-1"})
        assert hidden.status_code == 200
        assert "cannot be decoded safely here" in hidden.text and "nope_dashboard" in hidden.text
    # With signing on, an unsigned result is refused, never decoded.
    async with Shadow(name=name, url=redis_url, signing_key="k" * 32) as signed:
        signed.register(total)
        async with serve(signed) as (_, client):
            refused = await client.get("/task", params={"key": "sum-2"})
        assert refused.status_code == 200
        assert "cannot be shown safely here" in refused.text and "unsigned" in refused.text
        assert "<code>3</code>" not in refused.text


async def test_what_comes_from_redis_is_escaped(shadow: Shadow) -> None:
    shadow.register(pay)
    key = "<script>alert(1)</script>"
    await shadow.add(pay, when=later(600), key=key)("<b>o</b>", "c", [])
    async with serve(shadow) as (_, client):
        for page in [
            (await client.get("/scheduled")).text,
            (await client.get("/task", params={"key": key})).text,
        ]:
            assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert "<b>o</b>" not in page


async def test_no_secret_reaches_a_page(tmp_path: Path) -> None:
    password, signing_key = "hunter2-password", "signing-key-never-shown"
    with RedisProcess(extra_args=["--requirepass", password]) as server:
        url = server.url.replace("redis://", f"redis://:{password}@")
        async with Shadow(name="secrets", url=url, signing_key=signing_key) as shadow:
            shadow.register(pay)
            await shadow.add(pay, when=later(60), key="k")("o", "c", [])
            async with serve(shadow, token=TOKEN) as (_, client):
                pages = [(await client.get(path)).text for path in (
                    "/", "/running", "/scheduled", "/workers", "/failed", "/strikes",
                    "/task?key=k", "/api/state", "/login",
                )]  # fmt: skip
    for page in pages:
        assert password not in page and signing_key not in page and TOKEN not in page
    assert "redis://:***@127.0.0.1" in pages[0]


async def test_an_unreachable_redis_is_reported_not_hidden() -> None:
    gone = Shadow(name="gone", url="redis://127.0.0.1:1/0")
    async with gone as shadow, serve(shadow) as (dashboard, client):
        await wait_for(lambda: dashboard.poller.error is not None, message="the error")
        overview = await client.get("/")
        scheduled = await client.get("/scheduled")
        state = (await client.get("/api/state")).json()
    assert overview.status_code == 200 and "Redis unreachable" in overview.text
    assert scheduled.status_code == 503 and "Redis unreachable" in scheduled.text
    assert state["error"].startswith("Redis unreachable")


# -- serving ----------------------------------------------------------------------------


async def test_it_mounts_in_a_starlette_app(shadow: Shadow) -> None:
    shadow.register(pay)
    await shadow.add(pay, when=later(600), key="mounted")("o", "c", [])
    dashboard = Dashboard(settings(token=TOKEN), shadow=shadow)
    host = Starlette(routes=[Mount("/ops/shadows", app=dashboard)])
    transport = httpx.ASGITransport(app=host)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client:
            page = (await client.get("/ops/shadows/scheduled")).text
            assert dashboard.poller.running  # started by its first request
            assert 'href="/ops/shadows/task?key=mounted"' in page
            assert 'src="/ops/shadows/static/dashboard.js"' in page
            assert (await client.get("/ops/shadows/static/uPlot.iife.min.js")).status_code == 200
            login = await client.post(
                "/ops/shadows/login", data={"token": TOKEN, "name": "ops", "next": "//evil"}
            )
            assert login.headers["location"] == "/ops/shadows/"
            assert login.cookies["shadows_dashboard_session"]
            strikes = (await client.get("/ops/shadows/strikes")).text
            assert 'action="/ops/shadows/actions/strike"' in strikes
    finally:
        await dashboard.stop()


async def test_ten_browsers_cost_redis_what_one_does() -> None:
    """Event streams share the poller's readings: Redis sees one script call per tick."""
    with RedisProcess() as server:
        async with Shadow(name="cost", url=server.url) as shadow:
            dashboard = Dashboard(settings(poll_interval="200ms"), shadow=shadow)
            async with listening(dashboard) as base, httpx.AsyncClient(timeout=10) as client:
                await wait_for(lambda: dashboard.poller.readings >= 2, message="readings")
                await shadow.client.config_resetstat()
                first = dashboard.poller.readings
                received: list[int] = [0] * 10

                async def listen(n: int) -> None:
                    async with client.stream("GET", f"{base}/events") as response:
                        assert response.headers["content-type"].startswith("text/event-stream")
                        async for line in response.aiter_lines():
                            if line == "event: tick":
                                received[n] += 1

                listeners = [asyncio.create_task(listen(n)) for n in range(10)]
                await wait_for(lambda: min(received) >= 5, message="ten listeners get ticks")
                readings = dashboard.poller.readings - first
                stats = await shadow.client.info("commandstats")
                for listener in listeners:
                    listener.cancel()
                await asyncio.gather(*listeners, return_exceptions=True)
    scripts = sum(
        stats.get(f"cmdstat_{name}", {}).get("calls", 0)
        for name in ("evalsha", "eval", "evalsha_ro", "eval_ro")  # read-only scripts: _ro
    )
    assert readings - 1 <= scripts <= readings + 1  # one script call per reading, not per browser
    assert "cmdstat_xlen" in stats  # the reading's own commands, counted under their names


async def test_the_history_event_opens_every_stream(shadow: Shadow) -> None:
    async with serve(shadow) as (dashboard, _):
        await wait_for(lambda: dashboard.poller.readings >= 3, message="readings")
        events = dashboard.poller.events()
        kind, data = await anext(events)
        history = json.loads(data)
        kind_after, tick = await anext(events)
        await events.aclose()
    assert kind == "history" and len(history["points"]) >= 3 and history["span"] == 3600
    assert history["fields"][:4] == ["t", "ready", "scheduled", "running"]
    assert kind_after == "tick" and "gauges" in json.loads(tick)


def test_a_garbled_or_missing_tally_counts_nothing() -> None:
    assert parse_tally("") == parse_tally("{not json") == parse_tally("[1, 2]") == {}
    assert parse_tally('{"t": [1, 2], "u": "x", "v": [1, "a"]}') == {"t": (1, 2, 0, 0, 0, 0)}


def test_the_command_reports_bad_settings_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["dashboard", "--poll-interval", "5ms", "--port", "1"])
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "Error: dashboard setting 'poll_interval' from the command line: "
        "must be between 100ms and 1m"
    )


async def test_stopping_ends_the_event_streams(shadow: Shadow) -> None:
    async with serve(shadow) as (dashboard, _):
        events = dashboard.poller.events()
        assert (await anext(events))[0] == "history"
        assert (await anext(events))[0] == "tick"
        waiting = asyncio.create_task(anext(events))
        await dashboard.stop()
        with pytest.raises(StopAsyncIteration):
            await waiting
