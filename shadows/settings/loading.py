"""Loading the settings: flags over ``SHADOW_*`` variables over the file over defaults.

:func:`load_settings` is the one place that reads the environment and the config file.
:func:`current_settings` is what ``Shadow()`` uses: the settings a command activated, else
those of the environment and the file found from the current directory (cached).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from shadows.settings.model import SECTIONS, TASK_KEYS, Settings, TaskSettings
from shadows.settings.problems import ConfigError, Problem, did_you_mean
from shadows.settings.sources import (
    ConfigFile,
    Origin,
    Unit,
    join,
    locate,
    read_environment,
    read_file,
    working_directory,
)


@dataclass
class Loaded:
    """Settings with the origin of every value that is not a default."""

    settings: Settings
    origins: dict[Unit, Origin] = field(default_factory=dict)
    file: ConfigFile | None = None
    #: Mistakes that do not stop a worker (unknown ``SHADOW_*`` variables).
    warnings: list[Problem] = field(default_factory=list)

    def origin(self, unit: Unit) -> Origin:
        """Where the value of ``unit`` (or of the table holding it) came from."""
        for length in range(len(unit), 0, -1):
            found = self.origins.get(unit[:length])
            if found is not None:
                return found
        return Origin("default")

    def table_origin(self, name: str) -> str:
        """Where the ``[task.NAME]`` table came from, for messages."""
        units = [unit for unit in self.origins if unit[:2] == ("task", name)]
        origin = self.origins[units[0]] if units else Origin("default")
        if origin.kind == "file" and self.file is not None:
            return self.file.where(("task", name))
        return str(origin)

    @property
    def folder(self) -> Path:
        """Where task modules are imported from: the config file's folder, or the cwd."""
        return self.file.path.parent if self.file is not None else working_directory()

    def task_settings(self, name: str) -> TaskSettings | None:
        """The ``[task.NAME]`` table of the task ``name`` (variables spell it in capitals,
        so a table from a variable matches whatever the case)."""
        tables = self.settings.task
        if name in tables:
            return tables[name]
        for spelled, table in tables.items():
            if spelled.lower() == name.lower():
                return table
        return None


def load_settings(
    flags: Mapping[Unit, tuple[Any, str]] | None = None,
    config: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Loaded:
    """Validate every source and merge them; raises :class:`ConfigError` listing every
    problem. ``flags`` maps a setting to the value given and the flag that gave it."""
    environ = os.environ if environ is None else environ
    cwd = working_directory() if cwd is None else cwd
    problems: list[Problem] = []
    units: dict[Unit, Any] = {}
    origins: dict[Unit, Origin] = {}
    try:
        found = locate(config, environ, cwd)
    except FileNotFoundError as error:
        raise ConfigError([Problem("", str(error))]) from None
    if found is not None:
        file_units, file_origins, file_problems = read_file(found)
        units.update(file_units)
        origins.update(file_origins)
        problems += file_problems
    env_units, env_origins, unknown = read_environment(environ)
    _replace(units, origins, env_units, env_origins)
    for unit, (value, flag) in (flags or {}).items():
        _replace(units, origins, {unit: value}, {unit: Origin("flag", flag)})
    loaded = Loaded(Settings.model_construct(), origins, found, unknown)
    try:
        loaded.settings = Settings(**join(units))
    except ValidationError as error:
        problems += [_problem(item, loaded) for item in error.errors()]
    if problems:
        raise ConfigError(problems)
    return loaded


def _replace(
    units: dict[Unit, Any],
    origins: dict[Unit, Origin],
    new: Mapping[Unit, Any],
    new_origins: Mapping[Unit, Origin],
) -> None:
    """Put ``new`` units over ``units``, dropping what they replace (a whole task table
    replaces its keys, and the other way round)."""
    for unit in new:
        for old in [u for u in units if u[: len(unit)] == unit or unit[: len(u)] == u]:
            del units[old]
            origins.pop(old, None)
    units.update(new)
    origins.update(new_origins)


def _problem(error: Any, loaded: Loaded) -> Problem:
    location = tuple(str(part) for part in error["loc"])
    origin = loaded.origin(location)
    if origin.kind == "file" and loaded.file is not None:
        where = loaded.file.where(location)
    elif origin.kind in ("env", "flag"):
        where = origin.where
    else:
        where = ".".join(location)
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(location[-1], _known_keys(location[:-1]))
        return Problem(where, f"unknown setting {location[-1]!r}{hint}")
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = isinstance(value, str) and repr(value) in message
    if origin.kind in ("env", "flag") and isinstance(value, str | int | float) and not shown:
        message = f"{value!r}: {message}"
    return Problem(where, message)


def _known_keys(parent: Unit) -> list[str]:
    """The keys allowed where ``parent`` points: for "did you mean"."""
    if not parent:
        return list(Settings.model_fields)
    if parent[0] in SECTIONS and len(parent) == 1:
        return list(SECTIONS[parent[0]].model_fields)
    if parent[0] == "task" and len(parent) == 2:
        return list(TASK_KEYS)
    if parent[0] == "task" and len(parent) >= 3:
        annotation = TaskSettings.model_fields[parent[2]].annotation
        tables = [
            arg for arg in getattr(annotation, "__args__", ()) if hasattr(arg, "model_fields")
        ]
        return list(tables[0].model_fields) if tables else []
    return []


# -- the settings of this process ---------------------------------------------------

_active: Loaded | None = None
_cache: dict[Any, Loaded] = {}


def current() -> Loaded:
    """The activated settings, else those of the environment and the file found from the
    current directory (read once per directory, environment and file version)."""
    if _active is not None:
        return _active
    cwd = working_directory()
    variables = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SHADOW_")))
    try:
        found = locate(None, os.environ, cwd)
        version = found.path.stat().st_mtime_ns if found is not None else None
    except (FileNotFoundError, OSError):
        found = version = None
    key = (cwd, variables, found, version)
    loaded = _cache.get(key)
    if loaded is None:
        loaded = load_settings()
        _cache.clear()
        _cache[key] = loaded
    return loaded


def current_settings() -> Settings:
    """The settings ``Shadow()`` takes what it is not given from."""
    return current().settings


def activate(loaded: Loaded | None) -> None:
    """Make ``loaded`` the settings of this process (a command does, once it has read its
    flags, before the task modules are imported); ``None`` goes back to reading them."""
    global _active
    _active = loaded


@contextmanager
def activated(loaded: Loaded) -> Iterator[Loaded]:
    """:func:`activate` for the time of a ``with`` block."""
    previous = _active
    activate(loaded)
    try:
        yield loaded
    finally:
        activate(previous)
