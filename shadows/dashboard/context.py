"""What the pages and actions need of the dashboard that serves them (the
:class:`~shadows.dashboard.app.Dashboard`, which stores itself on its application)."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from shadows.dashboard.auth import Guard
from shadows.dashboard.poller import Poller
from shadows.dashboard.settings import DashboardSettings
from shadows.producer.shadow import Shadow


class Served(Protocol):
    settings: DashboardSettings
    shadow: Shadow
    poller: Poller
    guard: Guard
    templates: Jinja2Templates


def dashboard_of(request: Request) -> Served:
    served: Served = request.app.state.dashboard
    return served
