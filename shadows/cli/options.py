"""Options shared by the ``shadows`` commands, each with its ``SHADOW_*`` environment variable."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any

import typer

from ..durations import parse_duration
from ..shadow import DEFAULT_NAME, DEFAULT_URL

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_URL",
    "CallTasks",
    "Name",
    "Tasks",
    "Url",
    "collections",
    "duration",
]


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="SHADOW_URL",
        help="Redis URL (redis://, rediss://, unix://, valkey://, memory://).",
    ),
]
Name = Annotated[
    str,
    typer.Option(
        "--shadows", "--shadow", envvar="SHADOW_NAME", help="Name of the shadow (the shared queue)."
    ),
]


def _tasks(help: str) -> Any:
    return typer.Option("--tasks", envvar="SHADOW_TASKS", help=help)


#: The collections a worker runs.
Tasks = Annotated[
    list[str],
    _tasks("Task collections to register, as module:attribute (comma-separated or repeated)."),
]
#: The same option on the commands that show task calls: with the functions, they can
#: render calls as the workers' log lines do.
CallTasks = Annotated[
    list[str],
    _tasks(
        "Task collections to register, as module:attribute (comma-separated or repeated), "
        "to show the calls of those tasks (and of the built-in ones) with their Logged "
        "arguments, as the worker logs them; the tasks' arguments are then read. Without "
        "it only task names are shown."
    ),
]


def collections(values: Iterable[str]) -> list[str]:
    """The ``module:attribute`` paths of ``--tasks`` values (each may hold several)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
