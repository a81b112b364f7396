"""``shadows worker``: run tasks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import typer

from ..endpoints import EndpointError
from ..log_formats import LogFormat, configure_logging
from ..shadow import Shadow
from ..worker import Worker
from . import app
from .errors import CLIError
from .options import DEFAULT_NAME, DEFAULT_URL, Name, Tasks, Url, duration
from .output import open_shadow

DEFAULT_TASKS = "shadows.tasks:standard_tasks"


@app.command()
def worker(
    tasks: Tasks = [DEFAULT_TASKS],  # noqa: B006
    shadows: Name = DEFAULT_NAME,
    url: Url = DEFAULT_URL,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", envvar="SHADOW_WORKER_NAME", help="Worker name (default: host-pid)."
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", min=1, envvar="SHADOW_WORKER_CONCURRENCY", help="Tasks run at once."
        ),
    ] = 10,
    redelivery_timeout: Annotated[
        timedelta,
        typer.Option(
            "--redelivery-timeout",
            parser=duration,
            envvar="SHADOW_WORKER_REDELIVERY_TIMEOUT",
            help="How long a dead worker's task waits before another worker takes it.",
        ),
    ] = "5m",  # type: ignore[assignment]
    reconnection_delay: Annotated[
        timedelta,
        typer.Option(
            "--reconnection-delay",
            parser=duration,
            envvar="SHADOW_WORKER_RECONNECTION_DELAY",
            help="Longest wait between attempts to reach Redis again.",
        ),
    ] = "5s",  # type: ignore[assignment]
    minimum_check_interval: Annotated[
        timedelta,
        typer.Option(
            "--minimum-check-interval",
            parser=duration,
            envvar="SHADOW_WORKER_MINIMUM_CHECK_INTERVAL",
            help="How long an idle worker blocks on the stream before checking again.",
        ),
    ] = "250ms",  # type: ignore[assignment]
    scheduling_resolution: Annotated[
        timedelta,
        typer.Option(
            "--scheduling-resolution",
            parser=duration,
            envvar="SHADOW_WORKER_SCHEDULING_RESOLUTION",
            help="Longest sleep of the scheduler between looks for due tasks.",
        ),
    ] = "250ms",  # type: ignore[assignment]
    heartbeat_interval: Annotated[
        timedelta,
        typer.Option(
            "--heartbeat-interval",
            parser=duration,
            envvar="SHADOW_WORKER_HEARTBEAT_INTERVAL",
            help="How often the worker tells the registry it is alive.",
        ),
    ] = "2s",  # type: ignore[assignment]
    missed_heartbeats: Annotated[
        int,
        typer.Option(
            "--missed-heartbeats",
            min=1,
            envvar="SHADOW_WORKER_MISSED_HEARTBEATS",
            help="A worker that dies drops out of `shadows workers ls` after this many "
            "heartbeat intervals without a heartbeat.",
        ),
    ] = 3,
    max_deliveries: Annotated[
        int,
        typer.Option(
            "--max-deliveries",
            min=1,
            envvar="SHADOW_WORKER_MAX_DELIVERIES",
            help="Dead-letter a message as poison once it was delivered this often "
            "without being acknowledged (its workers kept dying).",
        ),
    ] = 5,
    schedule_automatic_tasks: Annotated[
        bool,
        typer.Option(
            "--schedule-automatic-tasks/--no-schedule-automatic-tasks",
            envvar="SHADOW_WORKER_SCHEDULE_AUTOMATIC_TASKS",
            help="Start automatic perpetual tasks when the worker starts.",
        ),
    ] = True,
    until_finished: Annotated[
        bool,
        typer.Option(
            "--until-finished",
            envvar="SHADOW_WORKER_UNTIL_FINISHED",
            help="Exit once nothing is due, scheduled or running.",
        ),
    ] = False,
    healthcheck_port: Annotated[
        int | None,
        typer.Option(
            "--healthcheck-port",
            min=0,
            max=65535,
            envvar="SHADOW_WORKER_HEALTHCHECK_PORT",
            help="Serve a health check on this port: GET / answers 200 while the worker "
            "really works (reads, Redis answers, event loop not blocked), else 503.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            envvar="SHADOW_WORKER_METRICS_PORT",
            help="Serve Prometheus metrics on this port (the same port as the health "
            "check is fine: metrics are then at /metrics).",
        ),
    ] = None,
    endpoint_host: Annotated[
        str | None,
        typer.Option(
            "--endpoint-host",
            envvar="SHADOW_WORKER_ENDPOINT_HOST",
            help="Serve the health check and metrics on this interface only (a host name "
            "or address, such as 127.0.0.1); default: every interface.",
        ),
    ] = None,
    maximum_loop_lag: Annotated[
        timedelta,
        typer.Option(
            "--maximum-loop-lag",
            parser=duration,
            envvar="SHADOW_WORKER_MAXIMUM_LOOP_LAG",
            help="How long the event loop may be blocked before the health check fails.",
        ),
    ] = "5s",  # type: ignore[assignment]
    logging_level: Annotated[
        str,
        typer.Option(
            "--logging-level", envvar="SHADOW_LOGGING_LEVEL", help="DEBUG, INFO, WARNING, ERROR."
        ),
    ] = "INFO",
    logging_format: Annotated[
        LogFormat,
        typer.Option(
            "--logging-format", envvar="SHADOW_LOGGING_FORMAT", help="rich, plain or json."
        ),
    ] = LogFormat.rich,
) -> None:
    """Run tasks of a shadow until stopped (SIGTERM/SIGINT finish running tasks first)."""
    if logging_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise CLIError(
            f"invalid logging level {logging_level!r}: use DEBUG, INFO, WARNING or ERROR"
        )
    configure_logging(logging_level, logging_format)
    shadow = open_shadow(
        shadows,
        url,
        tasks,
        heartbeat_interval=heartbeat_interval,
        missed_heartbeats=missed_heartbeats,
    )
    try:
        runner = Worker(
            shadow,
            name=name,
            concurrency=concurrency,
            redelivery_timeout=redelivery_timeout,
            reconnection_delay=reconnection_delay,
            minimum_check_interval=minimum_check_interval,
            scheduling_resolution=scheduling_resolution,
            schedule_automatic_tasks=schedule_automatic_tasks,
            max_deliveries=max_deliveries,
            healthcheck_port=healthcheck_port,
            metrics_port=metrics_port,
            endpoint_host=endpoint_host,
            maximum_loop_lag=maximum_loop_lag,
        )
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    asyncio.run(_run(shadow, runner, until_finished))


async def _run(shadow: Shadow, runner: Worker, until_finished: bool) -> None:
    try:
        async with shadow, runner:
            if until_finished:
                await runner.run_until_finished()
            else:
                await runner.run_forever()
    except EndpointError as error:
        raise CLIError(str(error)) from None
