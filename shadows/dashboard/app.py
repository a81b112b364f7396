"""The dashboard as an ASGI application: standalone (``shadows dashboard``) or mounted in a
Starlette or FastAPI app.

A :class:`Dashboard` owns one :class:`~shadows.dashboard.poller.Poller` and serves every
page and event stream from it. Standalone, its lifespan starts and stops the poller;
mounted (where a host's lifespan does not reach sub-applications), it starts on its first
request, and ``async with dashboard:`` in the host's lifespan stops it cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from shadows.dashboard import actions, formatting, pages
from shadows.dashboard.auth import Guard
from shadows.dashboard.poller import Poller
from shadows.dashboard.settings import DashboardSettings
from shadows.producer.shadow import Shadow

logger = logging.getLogger("shadows.dashboard")

HERE = Path(__file__).parent


class Dashboard:
    """The web dashboard of one shadow; an ASGI application.

    ``settings`` default to :meth:`DashboardSettings.load` (environment and
    ``shadows.toml``). Pass ``shadow`` to show a :class:`~shadows.Shadow` of your own (its
    registered tasks decide which calls can be shown); the dashboard opens it if it is
    not open yet, and then closes it when it stops.
    """

    def __init__(
        self, settings: DashboardSettings | None = None, *, shadow: Shadow | None = None
    ) -> None:
        self.settings = settings if settings is not None else DashboardSettings.load()
        if shadow is None:
            shadow = Shadow(name=self.settings.name, url=self.settings.url)
        for collection in self.settings.tasks:
            shadow.register_collection(collection)
        self.shadow = shadow
        self.poller = Poller(shadow, self.settings.poll_interval, self.settings.history)
        self.guard = Guard(self.settings)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        formatting.install(self.templates.env)
        self._opened_shadow = False
        self._starting = asyncio.Lock()
        self.app = Starlette(
            routes=[
                *pages.routes(),
                *actions.routes(),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            ],
            lifespan=self._lifespan,
            exception_handlers={RedisError: pages.unavailable, OSError: pages.unavailable},
        )
        self.app.state.dashboard = self

    def __repr__(self) -> str:
        return f"Dashboard(shadow={self.shadow.name!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.poller.running:
            await self.start()
        await self.app(scope, receive, send)

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the shadow (unless it is open) and start the poller; idempotent."""
        async with self._starting:
            if self.poller.running:
                return
            try:
                self.shadow.client  # noqa: B018 -- raises when the shadow is not open
            except RuntimeError:
                await self.shadow.__aenter__()
                self._opened_shadow = True
            self.poller.start()
            logger.info(
                "Dashboard of shadow %s started (%s)",
                self.shadow.name,
                "actions need the token" if self.guard.enabled else "read-only: no token",
            )

    async def stop(self) -> None:
        await self.poller.stop()
        if self._opened_shadow:
            self._opened_shadow = False
            await self.shadow.__aexit__(None, None, None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self:
            yield


def create_app(
    settings: DashboardSettings | None = None,
    *,
    shadow: Shadow | None = None,
    config: Path | str | None = None,
    **flags: Any,
) -> Dashboard:
    """A :class:`Dashboard`. Without ``settings``, they are loaded from the environment
    and the settings file (``config``, else ``$SHADOW_CONFIG``, else the nearest ``shadows.toml``);
    keyword ``flags`` (``token=...``, ``page_size=...``) win over both."""
    if settings is None:
        settings = DashboardSettings.load(config, **flags)
    elif flags:
        settings = DashboardSettings.load(config, **{**settings.model_dump(), **flags})
    return Dashboard(settings, shadow=shadow)
