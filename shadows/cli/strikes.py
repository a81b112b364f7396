"""``shadows strike``, ``shadows restore`` and ``shadows strikes``: the kill switch."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Name, Url
from shadows.cli.output import open_shadow
from shadows.operations.strikes import (
    Strike,
    UnreadableStrike,
    parse_operator,
    parse_value,
    read_strikes,
)
from shadows.producer.shadow import Shadow

EVERY_TASK = "*"

_USAGE = (
    "give TASK, TASK PARAMETER OPERATOR VALUE, or --all-tasks PARAMETER OPERATOR VALUE "
    "(TASK '*' means every task)"
)

Arguments = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[TASK] [PARAMETER OPERATOR VALUE]",
        help=(
            "The task, and optionally a test of one of its arguments. OPERATOR is one of "
            "== != < <= > >= (or eq ne lt le gt ge). VALUE is read as a Python literal "
            "(42, 1.5, None, True, '\"text\"', [1, 2]); anything else is taken as a string."
        ),
        show_default=False,
    ),
]
AllTasks = Annotated[
    bool,
    typer.Option(
        "--all-tasks",
        "--all",
        envvar="SHADOW_STRIKE_ALL_TASKS",
        help="Apply PARAMETER OPERATOR VALUE to every task that has that parameter.",
    ),
]

# Values like -5 must reach us as arguments, not be taken for unknown options.
_SETTINGS: dict[str, Any] = {"ignore_unknown_options": True}


def parse_target(arguments: list[str], all_tasks: bool) -> Strike:
    """The strike the command line names; ``CLIError`` with the usage otherwise."""
    if all_tasks:
        if len(arguments) != 3:
            raise CLIError(f"--all-tasks takes PARAMETER OPERATOR VALUE: {_USAGE}")
        function, rest = None, arguments
    elif len(arguments) == 1:
        if arguments[0] == EVERY_TASK:
            raise CLIError(f"'*' (every task) needs PARAMETER OPERATOR VALUE: {_USAGE}")
        function, rest = arguments[0], []
    elif len(arguments) == 4:
        function = None if arguments[0] == EVERY_TASK else arguments[0]
        rest = arguments[1:]
    else:
        got = len(arguments)
        raise CLIError(f"{_USAGE}; got {got} argument{'' if got == 1 else 's'}")
    try:
        if not rest:
            return Strike(function)
        parameter, operator, value = rest
        return Strike(function, parameter, parse_operator(operator), parse_value(value))
    except ValueError as error:
        raise CLIError(str(error)) from None


@app.command(context_settings=_SETTINGS)
def strike(
    arguments: Arguments = None,
    all_tasks: AllTasks = False,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
) -> None:
    """Stop running a task, or only its calls whose argument matches.

    Examples: strike process_order; strike process_order customer_id == 42;
    strike --all-tasks customer_id == '"acme"'. Every worker honours it within about a
    second; stricken calls are acknowledged without running.
    """
    target = parse_target(arguments or [], all_tasks)
    shadow = open_shadow(shadows, url, config=config)
    changed = asyncio.run(_change(shadow, "strike", target))
    if changed:
        print(f"Struck {target} on shadow {shadow.name!r}")
    else:
        print(f"Already struck: {target} on shadow {shadow.name!r}")


@app.command(context_settings=_SETTINGS)
def restore(
    arguments: Arguments = None,
    all_tasks: AllTasks = False,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
) -> None:
    """Lift a strike (same arguments as strike): later matching calls run again.

    Exits with status 1 when no such strike is in effect (see `shadows strikes`).
    """
    target = parse_target(arguments or [], all_tasks)
    shadow = open_shadow(shadows, url, config=config)
    if not asyncio.run(_change(shadow, "restore", target)):
        raise CLIError(
            f"no strike {target} is in effect on shadow {shadow.name!r} "
            "(list them with: shadows strikes)"
        )
    print(f"Restored {target} on shadow {shadow.name!r}")


@app.command("strikes")
def list_strikes(
    as_json: Annotated[
        bool,
        typer.Option("--json", envvar="SHADOW_JSON", help="Print a JSON list instead of text."),
    ] = False,
    shadows: Name = None,
    url: Url = None,
    config: Config = None,
) -> None:
    """List the strikes in effect, oldest first."""
    shadow = open_shadow(shadows, url, config=config)
    strikes, unreadable = asyncio.run(_list(shadow))
    if as_json:
        entries = [s.to_json() for s in strikes] + [u.to_json() for u in unreadable]
        print(json.dumps(entries, indent=2, default=repr))
        return
    if not strikes and not unreadable:
        print(f"No strikes in effect on shadow {shadow.name!r}")
        return
    count = len(strikes) + len(unreadable)
    print(f"{count} strike{'' if count == 1 else 's'} in effect on shadow {shadow.name!r}:")
    rows = [(str(s), _since(s.since)) for s in strikes]
    rows += [(str(u), f"{_since(u.since)}  (unreadable here: {u.reason})") for u in unreadable]
    width = max(len(text) for text, _ in rows)
    for text, since in rows:
        print(f"  {text.ljust(width)}  {since}".rstrip())


def _since(moment: datetime | None) -> str:
    return f"since {moment:%Y-%m-%d %H:%M:%S} UTC" if moment else ""


async def _change(shadow: Shadow, action: str, target: Strike) -> bool:
    async with shadow:
        method = shadow.strike if action == "strike" else shadow.restore
        try:
            return await method(target.function, target.parameter, target.operator, target.value)
        except (ValueError, TypeError) as error:
            raise CLIError(str(error)) from None


async def _list(shadow: Shadow) -> tuple[list[Strike], list[UnreadableStrike]]:
    async with shadow:
        strikes, broken = await read_strikes(shadow.client, shadow.keys, shadow.payloads)
    return list(strikes.values()), list(broken.values())
