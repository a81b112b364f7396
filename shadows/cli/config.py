"""``shadows config show`` and ``shadows config check``: the settings as they take effect."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import typer

from shadows.cli.app import app
from shadows.cli.errors import CLIError
from shadows.cli.options import Config, Tasks, settings_from
from shadows.cli.output import Json, console, print_json, show_group_help
from shadows.producer.shadow import Shadow
from shadows.settings import ConfigError, Loaded, Problem, activate
from shadows.settings.discovery import (
    Discovered,
    DiscoveryError,
    assemble,
    discover,
    gather,
    user_tasks,
)
from shadows.settings.effective import settings_entries, task_entries

config_app = typer.Typer(name="config", rich_markup_mode=None)
app.add_typer(config_app)


@config_app.callback(invoke_without_command=True)
def _config_group(context: typer.Context) -> None:
    """Show and check the settings (flags, SHADOW_* variables, the config file)."""
    show_group_help(context)


@config_app.command("show")
def show(config: Config = None, tasks: Tasks = None, json_output: Json = False) -> None:
    """Print every effective setting with its source (flag, env, file, decorator or
    default); the URL's password and the signing key are redacted."""
    loaded = settings_from(config, tasks=tasks)
    entries = settings_entries(loaded)
    if loaded.settings.tasks:
        entries.update(task_entries(loaded, _registered(loaded)))
    if json_output:
        print_json(entries)
        return
    out = console()
    out.print(f"Config file: {loaded.file or 'none (environment and defaults)'}")
    width = max(len(key) for key in entries)
    for key, entry in entries.items():
        out.print(f"{key.ljust(width)}  {_text(entry['value'])}  ({entry['source']})")


@config_app.command("check")
def check(config: Config = None, tasks: Tasks = None) -> None:
    """Validate the settings, import the task modules and list the tasks with their
    effective options; exits non-zero on any problem (for CI and deploy pipelines)."""
    loaded = settings_from(config, tasks=tasks)
    problems = list(loaded.warnings)  # unknown SHADOW_* variables fail the check
    if not loaded.settings.tasks:
        problems.append(Problem("tasks", "no task modules configured"))
        raise ConfigError(problems)
    try:
        shadow = assemble(loaded, _discover(loaded))
    except ConfigError as error:
        raise ConfigError([*problems, *error.problems]) from None
    if problems:
        raise ConfigError(problems)
    entries = task_entries(loaded, _registered(loaded))
    out = console()
    out.print(f"Config file: {loaded.file or 'none (environment and defaults)'}")
    out.print(f"Shadow {shadow.name!r} on {settings_entries(loaded)['url']['value']}")
    names = user_tasks(shadow) or sorted(shadow.tasks)
    out.print(f"{len(names)} task(s):")
    for name in names:
        options = [
            f"{key.rsplit('.', 1)[1]}={_text(entry['value'])} ({entry['source']})"
            for key, entry in entries.items()
            if key.startswith(f"task.{name}.")
        ]
        out.print(f"  {name}" + (f": {', '.join(options)}" if options else ""))
    out.print("Configuration OK")


def _discover(loaded: Loaded) -> Discovered:
    activate(loaded)
    logging.getLogger("shadows").setLevel(logging.ERROR)
    try:
        return discover(loaded)
    except DiscoveryError as error:
        message = f"{error}\n{error.details.rstrip()}" if error.details else str(error)
        raise CLIError(message, status=2) from None


def _registered(loaded: Loaded) -> dict[str, Callable[..., Any]]:
    """The tasks as declared (before the file's tables)."""
    found = _discover(loaded)
    shadow = Shadow()
    problems = gather(shadow, found)
    if problems:
        raise ConfigError(problems)
    return {name: shadow.tasks[name] for name in user_tasks(shadow)}


def _text(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if value is None:
        return "-"
    return str(value)
