"""``shadows tasks trace|fail|sleep``: schedule the built-in tasks, for smoke tests and drills."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Name, Url, duration
from shadows.cli.output import open_shadow, relative, run, show_group_help
from shadows.core.execution import Execution
from shadows.producer.shadow import Shadow
from shadows.tasks import fail as fail_task
from shadows.tasks import sleep as sleep_task
from shadows.tasks import trace as trace_task

tasks_app = typer.Typer(name="tasks", rich_markup_mode=None)
app.add_typer(tasks_app)


@tasks_app.callback(invoke_without_command=True)
def _tasks_group(context: typer.Context) -> None:
    """Schedule the built-in tasks (trace, fail, sleep) to check that work flows.

    Payloads use the codec and signing key of SHADOW_CODEC and SHADOW_SIGNING_KEY, like
    every producer's.
    """
    show_group_help(context)


def moment(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"invalid time {text!r}: use ISO 8601 with a time zone, "
            "e.g. 2030-01-01T09:00:00+00:00 or 2030-01-01T09:00Z"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        example = parsed.replace(tzinfo=UTC).isoformat()
        raise typer.BadParameter(f"{text!r} has no time zone: add one, e.g. {example} for UTC")
    return parsed


When = Annotated[
    datetime | None,
    typer.Option(
        "--when",
        parser=moment,
        envvar="SHADOW_TASK_WHEN",
        help="Run at this moment (ISO 8601 with a time zone, e.g. 2030-01-01T09:00Z).",
        show_default=False,
    ),
]
Delay = Annotated[
    timedelta | None,
    typer.Option(
        "--in",
        parser=duration,
        envvar="SHADOW_TASK_IN",
        help="Run after this long, e.g. 30s or 10m (instead of --when).",
        show_default=False,
    ),
]
Key = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="SHADOW_TASK_KEY",
        help="Task key (default: a fresh one); adding a key that is already scheduled, "
        "queued or running does nothing.",
        show_default=False,
    ),
]


@tasks_app.command()
def trace(
    message: Annotated[str, typer.Argument(help="What the worker logs.", show_default=False)],
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    when: When = None,
    delay: Delay = None,
    key: Key = None,
) -> None:
    """Schedule trace(MESSAGE): a worker logs MESSAGE."""
    _add(shadows, url, config, trace_task, (message,), when, delay, key)


@tasks_app.command()
def fail(
    message: Annotated[str, typer.Argument(help="The error message.", show_default=False)],
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    when: When = None,
    delay: Delay = None,
    key: Key = None,
) -> None:
    """Schedule fail(MESSAGE): a worker raises an error carrying MESSAGE."""
    _add(shadows, url, config, fail_task, (message,), when, delay, key)


@tasks_app.command()
def sleep(
    seconds: Annotated[
        timedelta,
        typer.Argument(
            parser=duration,
            metavar="DURATION",
            help="How long the task sleeps: 5, 500ms, 2m ...",
            show_default=False,
        ),
    ],
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    when: When = None,
    delay: Delay = None,
    key: Key = None,
) -> None:
    """Schedule sleep(DURATION): occupies a worker slot, for load and shutdown drills."""
    _add(shadows, url, config, sleep_task, (seconds.total_seconds(),), when, delay, key)


def _add(
    name: str | None,
    url: str | None,
    config: str | None,
    function: Any,
    args: tuple[Any, ...],
    when: datetime | None,
    delay: timedelta | None,
    key: str | None,
) -> None:
    if when is not None and delay is not None:
        raise CLIError("give either --when or --in, not both")
    if key is not None and not key:
        raise CLIError("--key must not be empty")
    now = datetime.now(UTC)
    due = now + delay if delay is not None else (when or now)
    execution = Execution(function, args, {}, due, key or str(uuid.uuid4()))
    shadow = open_shadow(name, url, config=config)
    outcome = run(_schedule(shadow, execution))
    if outcome == "exists":
        print(
            f"Not added: a task with key {execution.key!r} is already scheduled, queued or running."
        )
        return
    place = "queued, due now" if outcome == "queued" else f"scheduled {relative(due, now)}"
    print(f"Added {execution.call_repr()} to shadow {shadow.name} [key={execution.key}, {place}]")


async def _schedule(shadow: Shadow, execution: Execution) -> str:
    async with shadow:
        return await shadow.schedule(execution)
