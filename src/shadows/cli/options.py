"""Options shared by the ``shadows`` commands, each with its ``SHADOW_*`` environment variable."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from ..durations import parse_duration
from ..shadow import DEFAULT_NAME, DEFAULT_URL

__all__ = ["DEFAULT_NAME", "DEFAULT_URL", "Name", "Url", "duration"]


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
