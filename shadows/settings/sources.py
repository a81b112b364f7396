"""Where settings come from: flags, ``SHADOW_*`` variables, the config file, defaults.

Each source is read into *units* (a top-level setting, a setting of a section, or one key
of a ``[task.NAME]`` table) with their origin; a unit from a higher source replaces the
same unit from a lower one, so every effective value has exactly one origin.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shadows.settings.model import FOREIGN_SECTIONS, SECTIONS, TASK_KEYS, Settings
from shadows.settings.problems import Problem, did_you_mean

Kind = Literal["flag", "env", "file", "decorator", "default"]
Unit = tuple[str, ...]

PREFIX = "SHADOW_"
#: Names the config file explicitly (else it is looked for from the current directory).
CONFIG_VARIABLE = "SHADOW_CONFIG"
#: Variables of one command's own switches (``--json``, ``--yes``, ...), read by that
#: command: they are not settings, but they are not unknown either.
COMMAND_VARIABLES = frozenset(
    {
        "SHADOW_JSON",
        "SHADOW_CLEAR_YES",
        "SHADOW_INIT_FORCE",
        "SHADOW_SNAPSHOT_LIMIT",
        "SHADOW_FAILED_LIMIT",
        "SHADOW_FAILED_ALL",
        "SHADOW_FAILED_FORCE_UNVERIFIED",
        "SHADOW_STRIKE_ALL_TASKS",
        "SHADOW_TASK_WHEN",
        "SHADOW_TASK_IN",
        "SHADOW_TASK_KEY",
    }
)
_TASK_VARIABLE = re.compile(rf"{PREFIX}TASK_(.+)_({'|'.join(k.upper() for k in TASK_KEYS)})")


@dataclass(frozen=True)
class Origin:
    """Where one value came from: its ``kind`` and, but for defaults, ``where`` exactly."""

    kind: Kind
    where: str = ""

    def __str__(self) -> str:
        return self.where or self.kind


@dataclass(frozen=True)
class ConfigFile:
    """A config file: ``shadows.toml``, or the ``[tool.shadows]`` table of a
    ``pyproject.toml`` (then ``table`` is ``"tool.shadows"``)."""

    path: Path
    table: str | None = None

    def __str__(self) -> str:
        return f"{self.path} [{self.table}]" if self.table else str(self.path)

    def where(self, unit: Unit) -> str:
        """``shadows.toml, key worker.concurrency``: how messages name a key of it."""
        key = ".".join(unit if self.table is None else (self.table, *unit))
        return f"{self.path.name}, key {key}"

    def origin(self, unit: Unit) -> Origin:
        return Origin("file", self.where(unit))


def setting_variables() -> dict[str, Unit]:
    """The variable of every setting: ``SHADOW_URL``, ``SHADOW_WORKER_CONCURRENCY``, ..."""
    variables: dict[str, Unit] = {}
    for field in Settings.model_fields:
        if field == "task" or field in FOREIGN_SECTIONS:
            continue
        if field in SECTIONS:
            for inner in SECTIONS[field].model_fields:
                variables[f"{PREFIX}{field}_{inner}".upper()] = (field, inner)
        else:
            variables[f"{PREFIX}{field}".upper()] = (field,)
    return variables


def variable_of(unit: Unit) -> str:
    """The environment variable that sets ``unit``."""
    if unit[0] == "task":
        return f"{PREFIX}TASK_{unit[1]}_{unit[2]}".upper()
    return f"{PREFIX}{'_'.join(unit)}".upper()


def locate(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> ConfigFile | None:
    """The config file: ``explicit`` (``--config``), else ``$SHADOW_CONFIG``, else the
    nearest ``shadows.toml`` from ``cwd`` up, else the nearest ``pyproject.toml`` if it has
    a ``[tool.shadows]`` table. Raises ``FileNotFoundError`` for a named file missing."""
    named = explicit or environ.get(CONFIG_VARIABLE) or None
    if named is not None:
        path = (cwd / named).resolve()
        if not path.is_file():
            source = "--config" if explicit else CONFIG_VARIABLE
            raise FileNotFoundError(f"{source}: no config file {str(path)!r}")
        return ConfigFile(path, "tool.shadows" if path.name == "pyproject.toml" else None)
    folders = [cwd, *cwd.parents]
    for folder in folders:
        if (folder / "shadows.toml").is_file():
            return ConfigFile(folder / "shadows.toml")
    for folder in folders:
        project = folder / "pyproject.toml"
        if project.is_file():
            return ConfigFile(project, "tool.shadows") if _has_table(project) else None
    return None


def _has_table(project: Path) -> bool:
    try:
        document = tomllib.loads(project.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document.get("tool"), dict) and "shadows" in document["tool"]


def read_file(config: ConfigFile) -> tuple[dict[Unit, Any], dict[Unit, Origin], list[Problem]]:
    """The units of ``config``, their origins, and the problems met reading it."""
    try:
        document: Any = tomllib.loads(config.path.read_text(encoding="utf-8"))
    except OSError as error:
        return {}, {}, [Problem(str(config.path), f"cannot read it: {error}")]
    except tomllib.TOMLDecodeError as error:
        return {}, {}, [Problem(str(config.path), f"not valid TOML: {error}")]
    if config.table:
        document = document.get("tool", {}).get("shadows", {})
        if not isinstance(document, dict):
            return {}, {}, [Problem(str(config), "[tool.shadows] must be a table")]
    units = split(document)
    return units, {unit: config.origin(unit) for unit in units}, []


def split(document: Mapping[str, Any]) -> dict[Unit, Any]:
    """Units of a nested document: sections and task tables are opened one level."""
    units: dict[Unit, Any] = {}
    for key, value in document.items():
        if (key in SECTIONS or key in FOREIGN_SECTIONS) and isinstance(value, dict):
            units.update({(key, inner): item for inner, item in value.items()})
        elif key == "task" and isinstance(value, dict):
            for name, table in value.items():
                if isinstance(table, dict):
                    units.update({("task", name, inner): item for inner, item in table.items()})
                else:
                    units[("task", name)] = table
        else:
            units[(key,)] = value
    return units


def join(units: Mapping[Unit, Any]) -> dict[str, Any]:
    """The nested document of ``units`` (the inverse of :func:`split`)."""
    document: dict[str, Any] = {}
    for unit, value in units.items():
        place = document
        for part in unit[:-1]:
            place = place.setdefault(part, {})
        place[unit[-1]] = value
    return document


def read_environment(
    environ: Mapping[str, str],
) -> tuple[dict[Unit, Any], dict[Unit, Origin], list[Problem]]:
    """The units set by ``SHADOW_*`` variables, their origins, and the unknown variables."""
    variables = setting_variables()
    units: dict[Unit, Any] = {}
    origins: dict[Unit, Origin] = {}
    unknown: list[Problem] = []
    for variable, text in environ.items():
        if not variable.startswith(PREFIX) or text == "":
            continue
        unit = variables.get(variable)
        value: Any = text
        if unit is None:
            per_task = _TASK_VARIABLE.fullmatch(variable)
            foreign = _foreign(variable)
            if foreign is not None:
                unit = foreign
            elif per_task is not None:
                unit = ("task", per_task.group(1).lower(), per_task.group(2).lower())
                value = _table_or_text(text)
            elif variable == CONFIG_VARIABLE or variable in COMMAND_VARIABLES:
                continue
            else:
                known = [*variables, CONFIG_VARIABLE, *COMMAND_VARIABLES]
                hint = did_you_mean(variable, known)
                unknown.append(Problem(variable, f"no such setting{hint}"))
                continue
        units[unit] = value
        origins[unit] = Origin("env", variable)
    return units, origins, unknown


def _foreign(variable: str) -> Unit | None:
    """``("dashboard", "port")`` for ``SHADOW_DASHBOARD_PORT``."""
    for section in FOREIGN_SECTIONS:
        prefix = f"{PREFIX}{section.upper()}_"
        if variable.startswith(prefix) and len(variable) > len(prefix):
            return (section, variable[len(prefix) :].lower())
    return None


def _table_or_text(text: str) -> Any:
    """A per-task variable holds a JSON object for a table (``{"attempts": 8}``), else
    the text itself (``2m``, a cron expression)."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return text  # reported by the validation as not a table
    return text


def working_directory() -> Path:
    return Path(os.getcwd())
