"""The web dashboard of a shadow (the ``shadow-task[dashboard]`` extra).

Run it with ``shadows dashboard``, or mount it in a Starlette or FastAPI application::

    from shadows.dashboard import create_app

    dashboard = create_app(name="emails", url="redis://localhost:6379/0")
    app.mount("/shadows", dashboard)

See ``docs/dashboard.md``.
"""

from __future__ import annotations

from shadows.dashboard.app import Dashboard, create_app
from shadows.dashboard.settings import DashboardSettings, SettingsError

#: The charting library shipped in ``static/`` (from the npm registry), and its licence.
CHART_LIBRARY = ("uPlot", "1.6.32", "MIT")

__all__ = ["CHART_LIBRARY", "Dashboard", "DashboardSettings", "SettingsError", "create_app"]
