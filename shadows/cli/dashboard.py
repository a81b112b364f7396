"""``shadows dashboard``: serve the web dashboard (needs ``shadow-task[dashboard]``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.core.log_formats import LogFormat, configure_logging

logger = logging.getLogger("shadows.dashboard")

_MISSING = "the dashboard needs its extra: pip install 'shadow-task[dashboard]' ({error})"


def _option(*names: str, help: str, **extra: Any) -> Any:
    return typer.Option(*names, help=help, show_default=False, **extra)


@app.command()
def dashboard(
    shadows: Annotated[
        str | None, _option("--shadows", "--shadow", help="Name of the shadow [env SHADOW_NAME].")
    ] = None,
    url: Annotated[str | None, _option("--url", help="Redis URL [env SHADOW_URL].")] = None,
    tasks: Annotated[
        list[str] | None,
        _option(
            "--tasks",
            help=(
                "Task collections (module:attribute, comma-separated or repeated) whose calls "
                "the pages may show, with only their Logged arguments "
                "[env SHADOW_DASHBOARD_TASKS, SHADOW_TASKS]."
            ),
        ),
    ] = None,
    host: Annotated[
        str | None,
        _option("--host", help="Address to listen on [env SHADOW_DASHBOARD_HOST; 127.0.0.1]."),
    ] = None,
    port: Annotated[
        int | None,
        _option("--port", help="Port to listen on [env SHADOW_DASHBOARD_PORT; 8000]."),
    ] = None,
    token: Annotated[
        str | None,
        _option(
            "--token",
            help=(
                "Token every action needs (8+ characters); without one the dashboard is "
                "read-only. Prefer the variable, which other users cannot see in the "
                "process list [env SHADOW_DASHBOARD_TOKEN]."
            ),
        ),
    ] = None,
    poll_interval: Annotated[
        str | None,
        _option(
            "--poll-interval",
            help="How often the dashboard reads Redis [env SHADOW_DASHBOARD_POLL_INTERVAL; 1s].",
        ),
    ] = None,
    history: Annotated[
        str | None,
        _option("--history", help="How far back the charts go [env SHADOW_DASHBOARD_HISTORY; 1h]."),
    ] = None,
    page_size: Annotated[
        int | None,
        _option("--page-size", help="Rows per list page [env SHADOW_DASHBOARD_PAGE_SIZE; 50]."),
    ] = None,
    allowed_origins: Annotated[
        list[str] | None,
        _option(
            "--allowed-origin",
            help=(
                "Another origin allowed to post actions, such as https://ops.example.com "
                "behind a proxy (repeatable) [env SHADOW_DASHBOARD_ALLOWED_ORIGINS]."
            ),
        ),
    ] = None,
    root_path: Annotated[
        str | None,
        _option(
            "--root-path",
            help="Path prefix a reverse proxy serves it under [env SHADOW_DASHBOARD_ROOT_PATH].",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        _option(
            "--config",
            help="Settings file with a [dashboard] table "
            "[env SHADOW_CONFIG; the nearest shadows.toml].",
        ),
    ] = None,
    logging_level: Annotated[
        str, typer.Option("--logging-level", envvar="SHADOW_LOGGING_LEVEL", help="DEBUG, INFO, ...")
    ] = "INFO",
    logging_format: Annotated[
        LogFormat,
        typer.Option(
            "--logging-format", envvar="SHADOW_LOGGING_FORMAT", help="rich, plain or json."
        ),
    ] = LogFormat.rich,
) -> None:
    """Serve the web dashboard: live charts, running and scheduled tasks, workers, dead
    letters and strikes; actions (strike, restore, retry, purge, cancel) need the token."""
    try:
        import uvicorn

        from shadows.dashboard import DashboardSettings, SettingsError, create_app
    except ImportError as error:
        raise CLIError(_MISSING.format(error=error)) from None
    flags: dict[str, Any] = {
        "name": shadows,
        "url": url,
        "tasks": _split(tasks),
        "host": host,
        "port": port,
        "token": token,
        "poll_interval": poll_interval,
        "history": history,
        "page_size": page_size,
        "allowed_origins": allowed_origins or None,
        "root_path": root_path,
    }
    if logging_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise CLIError(
            f"invalid logging level {logging_level!r}: use DEBUG, INFO, WARNING or ERROR"
        )
    try:
        settings = DashboardSettings.load(config, **flags)
        application = create_app(settings)
    except (SettingsError, ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    configure_logging(logging_level, logging_format)
    logger.info(
        "Dashboard of shadow %s on http://%s:%d%s",
        application.shadow.name,
        settings.host,
        settings.port,
        settings.root_path,
    )
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,  # open event streams never end by themselves
    )


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
