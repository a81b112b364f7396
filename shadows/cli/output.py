"""What the operator commands share: opening a shadow, options, and rendering for humans
(rich) or machines (JSON)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from shadows.cli.errors import CLIError
from shadows.cli.options import settings_from
from shadows.producer.shadow import Shadow
from shadows.settings import activate, current_settings
from shadows.settings.discovery import DiscoveryError, discover, gather

T = TypeVar("T")

Json = Annotated[
    bool,
    typer.Option(
        "--json",
        envvar="SHADOW_JSON",
        help="Print JSON for scripts instead of tables (format: see the CLI reference).",
    ),
]


#: ``open_shadow`` called without ``tasks``: the command shows no calls, so the task
#: modules are not imported.
NO_TASKS: tuple[str, ...] = ()


def open_shadow(
    name: str | None,
    url: str | None,
    tasks: Sequence[str] | None = NO_TASKS,
    *,
    config: str | None = None,
) -> Shadow:
    """The shadow of the settings (the given flags over the variables and the file).
    Given ``tasks`` (the ``--tasks`` of a command that shows calls, ``None`` if not
    given), the tasks of the ``tasks`` setting are registered too, so that their calls
    can be shown. Bad settings are reported together (see ``main``), bad task entries
    in one line."""
    listed = [] if tasks is NO_TASKS else list(tasks or [])
    loaded = settings_from(config, shadows=name, url=url, tasks=listed)
    activate(loaded)
    try:
        shadow = Shadow()
        if tasks is NO_TASKS:
            return shadow
        found = discover(loaded)
    except DiscoveryError as error:
        raise CLIError(str(error)) from None
    except (ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    problems = gather(shadow, found)
    if problems:
        raise CLIError("; ".join(str(problem) for problem in problems))
    return shadow


def calls_shown() -> bool:
    """Whether the command's calls are shown: tasks are configured (--tasks,
    SHADOW_TASKS or the file), so their functions say which arguments may be shown."""
    return bool(current_settings().tasks)


def shadow_name() -> str:
    """The name of the shadow the command works on (after :func:`open_shadow`)."""
    return current_settings().name


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def console() -> Console:
    """Rich output where task keys and names print as they are (no markup, no emoji)."""
    return Console(highlight=False, markup=False, emoji=False)


def print_json(document: Any) -> None:
    """One JSON document on stdout, keys in a fixed order, UTF-8 kept readable."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def span(seconds: float) -> str:
    """A short human duration: ``850ms``, ``12.3s``, ``4m 05s``, ``2h 10m``, ``3d 4h``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def relative(moment: datetime, now: datetime) -> str:
    """``in 5m 00s``, ``3.0s ago`` or ``now`` (within a tenth of a second)."""
    delta = (moment - now).total_seconds()
    if abs(delta) < 0.1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def timestamp(moment: datetime | None) -> str:
    """UTC, to the second: tables are read by people in many time zones."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def show_group_help(context: typer.Context) -> None:
    """A command group called without a command prints its help, like ``shadows`` alone."""
    if context.invoked_subcommand is None:
        print(context.get_help())
        raise typer.Exit(0)
