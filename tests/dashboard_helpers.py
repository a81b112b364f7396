"""Serving a dashboard to the tests: in process (httpx over ASGI) or on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from shadows import Shadow
from shadows.dashboard import Dashboard, DashboardSettings

TOKEN = "correct-horse-battery"
BASE = "http://dash.test"


def settings(**values: Any) -> DashboardSettings:
    """Settings for a test: fast polling, nothing read from the environment's file."""
    values.setdefault("poll_interval", "100ms")
    return DashboardSettings.load(config=None, **values)


@contextlib.asynccontextmanager
async def serve(
    shadow: Shadow, app: ASGIApp | None = None, **values: Any
) -> AsyncIterator[tuple[Dashboard, httpx.AsyncClient]]:
    """A dashboard of ``shadow`` (mounted in ``app``, if given) and a client for it."""
    dashboard = Dashboard(settings(**values), shadow=shadow)
    if app is None:
        await dashboard.start()
    transport = httpx.ASGITransport(app=app or dashboard)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield dashboard, client
    finally:
        await dashboard.stop()


async def login(client: httpx.AsyncClient, name: str = "alice", prefix: str = "") -> str:
    """Log in with the token; returns the CSRF token of the session."""
    response = await client.post(
        f"{prefix}/login", data={"token": TOKEN, "name": name, "next": f"{prefix}/strikes"}
    )
    assert response.status_code == 303, response.text
    return csrf_of((await client.get(f"{prefix}/strikes")).text)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page (not logged in?)"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def listening(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free local port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # open event streams would keep a graceful exit waiting
        await task
