"""``shadows clear``: remove every scheduled and queued task of a shadow."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Name, Url
from shadows.cli.output import open_shadow, run
from shadows.core.connection import redact_url
from shadows.producer.shadow import Shadow


@app.command()
def clear(
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            envvar="SHADOW_CLEAR_YES",
            help="Do not ask for confirmation (needed when not run from a terminal).",
        ),
    ] = False,
) -> None:
    """Remove every scheduled and queued task; running tasks finish undisturbed."""
    shadow = open_shadow(shadows, url, config=config)
    if not yes:
        if not sys.stdin.isatty():
            raise CLIError("clear removes work for good: confirm with --yes")
        typer.confirm(
            f"Remove every scheduled and queued task of shadow {shadow.name!r} "
            f"on {redact_url(shadow.url)}?",
            abort=True,
        )
    removed = run(_clear(shadow))
    print(f"Cleared {removed:,} task(s) from shadow {shadow.name}.")


async def _clear(shadow: Shadow) -> int:
    async with shadow:
        return await shadow.clear()
