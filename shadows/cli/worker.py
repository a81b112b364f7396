"""``shadows worker``: run the tasks the settings name."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import (
    Config,
    Name,
    Shards,
    Tasks,
    Url,
    setting_option,
    settings_from,
)
from shadows.core.log_formats import configure_logging
from shadows.operations.endpoints import EndpointError
from shadows.producer.shadow import Shadow
from shadows.settings import Loaded, activate
from shadows.settings.discovery import DiscoveryError, assemble, discover, user_tasks
from shadows.worker.heartbeat import WorkerNameTaken
from shadows.worker.worker import Worker

logger = logging.getLogger("shadows.worker")


def _worker(parameter: str, setting: str, *flags: str) -> object:
    return setting_option(parameter, ("worker", setting), *flags)


@app.command()
def worker(
    tasks: Tasks = None,
    shadows: Name = None,
    url: Url = None,
    shards: Shards = None,
    config: Config = None,
    name: Annotated[str | None, _worker("name", "name", "--name")] = None,
    concurrency: Annotated[
        int | None, _worker("concurrency", "concurrency", "--concurrency")
    ] = None,
    redelivery_timeout: Annotated[
        str | None, _worker("redelivery_timeout", "redelivery_timeout", "--redelivery-timeout")
    ] = None,
    reconnection_delay: Annotated[
        str | None, _worker("reconnection_delay", "reconnection_delay", "--reconnection-delay")
    ] = None,
    minimum_check_interval: Annotated[
        str | None,
        _worker("minimum_check_interval", "minimum_check_interval", "--minimum-check-interval"),
    ] = None,
    scheduling_resolution: Annotated[
        str | None,
        _worker("scheduling_resolution", "scheduling_resolution", "--scheduling-resolution"),
    ] = None,
    heartbeat_interval: Annotated[
        str | None, _worker("heartbeat_interval", "heartbeat_interval", "--heartbeat-interval")
    ] = None,
    missed_heartbeats: Annotated[
        int | None, _worker("missed_heartbeats", "missed_heartbeats", "--missed-heartbeats")
    ] = None,
    max_deliveries: Annotated[
        int | None, _worker("max_deliveries", "max_deliveries", "--max-deliveries")
    ] = None,
    unknown_task_grace: Annotated[
        str | None, _worker("unknown_task_grace", "unknown_task_grace", "--unknown-task-grace")
    ] = None,
    schedule_automatic_tasks: Annotated[
        bool | None,
        _worker(
            "schedule_automatic_tasks",
            "schedule_automatic_tasks",
            "--schedule-automatic-tasks/--no-schedule-automatic-tasks",
        ),
    ] = None,
    until_finished: Annotated[
        bool | None, _worker("until_finished", "until_finished", "--until-finished")
    ] = None,
    healthcheck_port: Annotated[
        int | None, _worker("healthcheck_port", "healthcheck_port", "--healthcheck-port")
    ] = None,
    metrics_port: Annotated[
        int | None, _worker("metrics_port", "metrics_port", "--metrics-port")
    ] = None,
    endpoint_host: Annotated[
        str | None, _worker("endpoint_host", "endpoint_host", "--endpoint-host")
    ] = None,
    maximum_loop_lag: Annotated[
        str | None, _worker("maximum_loop_lag", "maximum_loop_lag", "--maximum-loop-lag")
    ] = None,
    logging_level: Annotated[
        str | None, setting_option("logging_level", ("logging", "level"), "--logging-level")
    ] = None,
    logging_format: Annotated[
        str | None, setting_option("logging_format", ("logging", "format"), "--logging-format")
    ] = None,
) -> None:
    """Run the tasks of a shadow until stopped (SIGTERM/SIGINT finish running tasks first).

    With no options, in a project with a shadows.toml (or [tool.shadows] in
    pyproject.toml), it imports the task modules the file lists and runs their tasks.
    """
    loaded = settings_from(
        config,
        tasks=tasks,
        shadows=shadows,
        url=url,
        shards=shards,
        name=name,
        concurrency=concurrency,
        redelivery_timeout=redelivery_timeout,
        reconnection_delay=reconnection_delay,
        minimum_check_interval=minimum_check_interval,
        scheduling_resolution=scheduling_resolution,
        heartbeat_interval=heartbeat_interval,
        missed_heartbeats=missed_heartbeats,
        max_deliveries=max_deliveries,
        unknown_task_grace=unknown_task_grace,
        schedule_automatic_tasks=schedule_automatic_tasks,
        until_finished=until_finished,
        healthcheck_port=healthcheck_port,
        metrics_port=metrics_port,
        endpoint_host=endpoint_host,
        maximum_loop_lag=maximum_loop_lag,
        logging_level=logging_level,
        logging_format=logging_format,
    )
    settings = loaded.settings
    configure_logging(settings.logging.level, settings.logging.format)
    for problem in loaded.warnings:
        logger.warning("Ignoring %s", problem)
    shadow = prepare(loaded)
    options = settings.worker
    try:
        runner = Worker(
            shadow,
            name=options.name,
            concurrency=options.concurrency,
            redelivery_timeout=options.redelivery_timeout,
            reconnection_delay=options.reconnection_delay,
            minimum_check_interval=options.minimum_check_interval,
            scheduling_resolution=options.scheduling_resolution,
            schedule_automatic_tasks=options.schedule_automatic_tasks,
            max_deliveries=options.max_deliveries,
            healthcheck_port=options.healthcheck_port,
            metrics_port=options.metrics_port,
            endpoint_host=options.endpoint_host,
            maximum_loop_lag=options.maximum_loop_lag,
            unknown_task_grace=options.unknown_task_grace,
        )
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    asyncio.run(_run(shadow, runner, options.until_finished))


def prepare(loaded: Loaded) -> Shadow:
    """Activate ``loaded``, import the task modules, and gather their tasks on the
    configured shadow (see :mod:`shadows.settings.discovery`)."""
    activate(loaded)
    if not loaded.settings.tasks:
        raise CLIError(
            'no tasks to run: list task modules in shadows.toml (tasks = ["myapp.tasks"]), '
            "SHADOW_TASKS or --tasks (--tasks shadows.tasks:standard_tasks runs only the "
            "built-in tasks)",
            status=2,
        )
    try:
        found = discover(loaded)
    except DiscoveryError as error:
        if error.details:
            logger.error("%s\n%s", error, error.details.rstrip())
        raise CLIError(str(error), status=2) from None
    shadow = assemble(loaded, found)
    logger.info(
        "Settings from %s; task modules: %s; tasks: %s",
        loaded.file or "the environment and defaults (no config file)",
        ", ".join(found.modules) or "none",
        ", ".join(user_tasks(shadow)) or ", ".join(sorted(shadow.tasks)),
    )
    return shadow


async def _run(shadow: Shadow, runner: Worker, until_finished: bool) -> None:
    try:
        async with shadow, runner:
            if until_finished:
                await runner.run_until_finished()
            else:
                await runner.run_forever()
    except EndpointError as error:
        raise CLIError(str(error)) from None
    except WorkerNameTaken as error:
        raise CLIError(str(error), status=3) from None
