"""Acting from the dashboard: who may, how a request proves it, what each action does and
what it logs. In process, on both backends."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from dashboard_helpers import TOKEN, csrf_of, login, serve
from shadows import Shadow, Worker
from shadows.operations.strikes import Strike


async def charge(customer: str, amount: int) -> None:
    if amount < 0:
        raise ValueError("negative amount")


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def dead_letter(shadow: Shadow, key: str) -> None:
    shadow.register(charge)
    await shadow.add(charge, key=key)("acme", -1)
    async with Worker(shadow) as worker:
        await worker.run_until_finished()
    assert await shadow.failed_task(key) is not None


async def test_a_read_only_dashboard_refuses_every_action(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    shadow.register(charge)
    await shadow.add(charge, when=later(600), key="k")("acme", 1)
    async with serve(shadow) as (_, client):
        page = (await client.get("/scheduled")).text
        assert "read-only" in page and "/actions/cancel" not in page
        for action in ("cancel", "strike", "restore", "retry", "purge"):
            response = await client.post(f"/actions/{action}", data={"key": "k", "task": "charge"})
            assert response.status_code == 403, action
            assert "read-only: no token is configured" in response.text
        login = await client.post("/login", data={"token": "anything-at-all"})
        assert login.status_code == 403
    assert await shadow.task_state("k") == "scheduled"
    assert await shadow.strikes() == []
    assert "Refused cancel" in caplog.text


async def test_an_action_without_the_token_is_refused_and_changes_nothing(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    shadow.register(charge)
    await shadow.add(charge, when=later(600), key="k")("acme", 1)
    async with serve(shadow, token=TOKEN) as (_, client):
        anonymous = await client.post("/actions/cancel", data={"key": "k"})
        wrong = await client.post(
            "/actions/cancel",
            data={"key": "k"},
            headers={"Authorization": "Bearer not-the-token", "Accept": "application/json"},
        )
        bad_login = await client.post("/login", data={"token": "not-the-token", "name": "eve"})
        assert "/actions/cancel" not in (await client.get("/scheduled")).text
    assert anonymous.status_code == 401
    assert "log in with the dashboard&#39;s token" in anonymous.text
    assert wrong.status_code == 401 and wrong.json() == {"ok": False, "message": "wrong token"}
    assert bad_login.status_code == 401 and "Wrong token." in bad_login.text
    assert "shadows_dashboard_session" not in bad_login.cookies
    assert await shadow.task_state("k") == "scheduled"
    assert "Failed login" in caplog.text


async def test_a_session_needs_its_csrf_token_and_its_own_origin(shadow: Shadow) -> None:
    shadow.register(charge)
    await shadow.add(charge, when=later(600), key="k")("acme", 1)
    async with serve(shadow, token=TOKEN, allowed_origins=["https://ops.example"]) as (_, client):
        csrf = await login(client)
        missing = await client.post("/actions/cancel", data={"key": "k"})
        forged = await client.post("/actions/cancel", data={"key": "k", "csrf": csrf + "x"})
        elsewhere = await client.post(
            "/actions/cancel",
            data={"key": "k", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert await shadow.task_state("k") == "scheduled"
        allowed = await client.post(
            "/actions/cancel",
            data={"key": "k", "csrf": csrf, "next": "/scheduled"},
            headers={"Origin": "https://ops.example"},
        )
    assert missing.status_code == forged.status_code == 403
    assert "CSRF token" in missing.text
    assert elsewhere.status_code == 403 and "cross-site request refused" in elsewhere.text
    assert allowed.status_code == 303 and allowed.headers["location"] == "/scheduled"
    assert await shadow.task_state("k") == "cancelled"


async def test_a_tampered_or_expired_session_is_no_session(shadow: Shadow) -> None:
    async with serve(shadow, token=TOKEN, session_lifetime="1s") as (dashboard, client):
        await login(client)
        cookie = client.cookies["shadows_dashboard_session"]
        body, signature = cookie.rsplit(".", 1)
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["who"] = "mallory"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        client.cookies.set("shadows_dashboard_session", f"{forged}.{signature}")
        assert "mallory" not in (await client.get("/")).text
        expired = dashboard.guard.issue("old")
        claims = json.loads(base64.urlsafe_b64decode(expired.split(".")[0] + "=="))
        assert claims["exp"] - datetime.now(UTC).timestamp() <= 1


async def test_striking_and_restoring_from_the_form(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "shadows.dashboard")
    shadow.register(charge)
    async with serve(shadow, token=TOKEN) as (_, client):
        csrf = await login(client, "alice")
        form = {"csrf": csrf, "task": "charge", "parameter": "customer", "operator": "==",
                "value": "'acme'", "next": "/strikes"}  # fmt: skip
        struck = await client.post("/actions/strike", data=form)
        whole = await client.post("/actions/strike", data={"csrf": csrf, "task": "other"})
        assert struck.status_code == whole.status_code == 303
        assert set(await shadow.strikes()) == {
            Strike("charge", "customer", "==", "acme"),
            Strike("other"),
        }
        page = (await client.get("/strikes")).text
        assert 'id="notice" class="banner ok" role="status">struck other<' in page
        assert "<code>charge(customer == &#39;acme&#39;)</code>" in page
        bad = await client.post("/actions/strike", data={**form, "value": "[1, 2"})
        typo = await client.post("/actions/strike", data={**form, "parameter": "custmer"})
        ids = [part.split('"')[0] for part in page.split('name="id" value="')[1:]]
        for strike_id in ids:
            restored = await client.post(
                "/actions/restore", data={"csrf": csrf, "id": strike_id, "next": "/strikes"}
            )
            assert restored.status_code == 303
        again = await client.post(
            "/actions/restore",
            data={"csrf": csrf, "id": ids[0]},
            headers={"Accept": "application/json"},
        )
    assert bad.status_code == 400 and "cannot parse the value" in bad.text
    assert 'value="[1, 2"' in bad.text  # the form keeps what was typed
    assert typo.status_code == 400 and "has no parameter &#39;custmer&#39;" in typo.text
    assert await shadow.strikes() == []
    assert again.status_code == 404 and "no such strike" in again.json()["message"]
    assert "alice (session from 127.0.0.1): struck charge(customer == 'acme')" in caplog.text
    assert "alice (session from 127.0.0.1): restored" in caplog.text


async def test_cancelling_waiting_tasks(shadow: Shadow) -> None:
    shadow.register(charge)
    await shadow.add(charge, when=later(600), key="later")("acme", 1)
    await shadow.add(charge, key="now")("acme", 1)
    async with serve(shadow, token=TOKEN) as (_, client):
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        done = await client.post("/actions/cancel", data={"key": "later"}, headers=headers)
        queued = await client.post("/actions/cancel", data={"key": "now"}, headers=headers)
        again = await client.post("/actions/cancel", data={"key": "now"}, headers=headers)
        nothing = await client.post("/actions/cancel", data={}, headers=headers)
    assert done.json() == {"ok": True, "message": "cancelled task 'later'"}
    assert await shadow.task_state("later") == "cancelled"
    assert queued.json() == {"ok": True, "message": "cancelled task 'now'"}
    assert await shadow.task_state("now") == "cancelled"
    assert again.status_code == 409 and "not waiting or running" in again.json()["message"]
    assert nothing.status_code == 400 and nothing.json()["message"] == "give the task's key"


async def test_retrying_and_purging_dead_letters(
    shadow: Shadow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "shadows.dashboard")
    for key in ("a", "b", "c"):
        await dead_letter(shadow, key)
    async with serve(shadow, token=TOKEN) as (_, client):
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "X-Shadows-Operator": "carol",
            "Accept": "application/json",
        }
        retried = await client.post("/actions/retry", json={"key": "a"}, headers=headers)
        assert await shadow.task_state("a") == "queued"
        assert await shadow.failed_task("a") is None
        unknown = await client.post("/actions/retry", json={"key": "zzz"}, headers=headers)
        purged = await client.post("/actions/purge", json={"key": "b"}, headers=headers)
        rest = await client.post("/actions/purge", json={"all": "1"}, headers=headers)
    assert retried.json() == {"ok": True, "message": "retried dead letter 'a' (queued)"}
    assert unknown.status_code == 404
    assert purged.json()["message"] == "purged dead letter 'b'"
    assert rest.json()["message"] == "purged all 1 dead letters"
    assert await shadow.failed() == []
    assert "carol (token from 127.0.0.1): retried dead letter 'a'" in caplog.text


async def test_after_an_action_the_browser_goes_back_only_inside_the_dashboard(
    shadow: Shadow,
) -> None:
    async with serve(shadow, token=TOKEN) as (_, client):
        csrf = await login(client)
        for target, expected in [
            ("/failed?start=50", "/failed?start=50"),
            ("//evil.example/x", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil.example", "/"),
        ]:
            response = await client.post(
                "/actions/purge", data={"csrf": csrf, "all": "1", "next": target}
            )
            assert response.headers["location"] == expected
        notice = (await client.get("/failed")).text
        assert "purged all 0 dead letters" in notice
        assert "purged all" not in (await client.get("/failed")).text  # shown once
        csrf_again = csrf_of((await client.get("/strikes")).text)
        assert csrf_again == csrf
        out = await client.post("/logout")
        assert out.status_code == 303
        assert "Log in to act" in (await client.get("/")).text
