"""Options shared by the ``shadows`` commands.

An option that sets a setting has no default and reads no variable of its own: a flag
the user gave is passed on to the settings model (see :func:`settings_from`), which
reads the ``SHADOW_*`` variables and the config file itself. Its help names the variable
and the default, both taken from the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from shadows.core.durations import format_duration, parse_duration
from shadows.settings import Loaded, load_settings
from shadows.settings.model import SECTIONS, Settings
from shadows.settings.sources import CONFIG_VARIABLE, Unit, variable_of

__all__ = [
    "CallTasks",
    "Config",
    "Name",
    "Shards",
    "Tasks",
    "Url",
    "collections",
    "duration",
    "setting_option",
    "settings_from",
]

#: The setting each option sets, by the option's parameter name, and its main flag.
SETTING_OPTIONS: dict[str, tuple[Unit, str]] = {}


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def field_of(unit: Unit) -> FieldInfo:
    if len(unit) == 1:
        return Settings.model_fields[unit[0]]
    return SECTIONS[unit[0]].model_fields[unit[1]]


def default_text(unit: Unit) -> str:
    """The model's default of ``unit``, written as a flag would take it."""
    field = field_of(unit)
    value = field.get_default(call_default_factory=True)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return "" if value is None else str(value)


def setting_option(parameter: str, unit: Unit, *flags: str, **options: Any) -> Any:
    """A typer option for the setting ``unit``, known as ``parameter`` in commands."""
    SETTING_OPTIONS[parameter] = (unit, flags[0].split("/")[0])
    field = field_of(unit)
    default = default_text(unit)
    shown = f"; default: {default}" if default else ""
    help = f"{field.description} [env: {variable_of(unit)}{shown}]"
    return typer.Option(*flags, help=help, show_default=False, **options)


Config = Annotated[
    str | None,
    typer.Option(
        "--config",
        help=f"The config file (default: {CONFIG_VARIABLE}, else the nearest shadows.toml, "
        "else [tool.shadows] of the nearest pyproject.toml). [env: SHADOW_CONFIG]",
        show_default=False,
    ),
]
Url = Annotated[str | None, setting_option("url", ("url",), "--url")]
Name = Annotated[str | None, setting_option("shadows", ("name",), "--shadows", "--shadow")]
Shards = Annotated[int | None, setting_option("shards", ("shards",), "--shards")]
#: The task modules a worker runs.
Tasks = Annotated[list[str] | None, setting_option("tasks", ("tasks",), "--tasks")]
#: The same option on the commands that show task calls: with the functions, they can
#: render calls as the workers' log lines do.
CallTasks = Annotated[
    list[str] | None,
    typer.Option(
        "--tasks",
        help="Task modules or module:attribute collections (comma-separated or repeated), "
        "to show the calls of those tasks (and of the built-in ones) with their Logged "
        "arguments, as the worker logs them; the tasks' arguments are then read. Without "
        "tasks only task names are shown. [env: SHADOW_TASKS]",
        show_default=False,
    ),
]


def collections(values: Iterable[str]) -> list[str]:
    """The entries of ``--tasks`` values (each may hold several, comma-separated)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def settings_from(config: str | None = None, **given: Any) -> Loaded:
    """The settings, with the flags among ``given`` (by parameter name; ``None`` or an
    empty list when not given) over the variables and the file."""
    flags: dict[Unit, tuple[Any, str]] = {}
    for parameter, value in given.items():
        if value is None or value == []:
            continue
        unit, flag = SETTING_OPTIONS[parameter]
        if isinstance(value, list):
            value = collections(value)
        flags[unit] = (value, flag)
    return load_settings(flags, config)
