"""Finding the tasks the settings name, and gathering them on the configured shadow.

Each entry of ``tasks`` is a module (``myapp.tasks``), a package (imported with all its
submodules) or an old ``module:attribute`` collection. The ``Shadow`` objects at module
level in the imported modules (and the shadows of the task handles there) carry the
registrations. Those that name the configured shadow (same name and URL, as module-level
``Shadow()`` objects do) are *merged*: their tasks all run on one shadow made from the
settings, where two different tasks under one name are an error as on any shadow. A
module's shadow that names another shadow is skipped with a warning: its tasks are for
the workers of that shadow.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from shadows.behaviours.base import BEHAVIOURS_ATTRIBUTE, behaviour_kind
from shadows.core.functions import load_collection, unwrapped
from shadows.producer.shadow import Shadow
from shadows.producer.task import Task
from shadows.settings.loading import Loaded
from shadows.settings.overrides import declared, overridden
from shadows.settings.problems import ConfigError, Problem, did_you_mean
from shadows.tasks import standard_tasks

logger = logging.getLogger("shadows.settings")


class DiscoveryError(Exception):
    """A task module failed to import: the message names the ``tasks`` entry, and
    ``details`` holds the traceback (empty when the module simply does not exist)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass
class Discovered:
    """What importing the ``tasks`` entries found."""

    modules: list[str] = field(default_factory=list)
    shadows: list[Shadow] = field(default_factory=list)
    #: The functions of ``module:attribute`` collections.
    functions: list[Callable[..., Any]] = field(default_factory=list)


def discover(loaded: Loaded) -> Discovered:
    """Import every entry of ``tasks``, from the config file's folder (or the cwd)."""
    folder = str(loaded.folder)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    found = Discovered()
    source = loaded.origin(("tasks",))
    for entry in loaded.settings.tasks:
        where = f"tasks entry {entry!r} (from {source})"
        if ":" in entry:
            try:
                found.functions += load_collection(entry)
            except ValueError as error:
                raise DiscoveryError(f"{where}: {error}") from None
            except Exception as error:
                raise DiscoveryError(f"cannot import {where}: {error}", _trace(error)) from None
            continue
        for module in _import_all(entry, where):
            found.modules.append(module.__name__)
            for value in list(vars(module).values()):
                shadow = value.shadow if isinstance(value, Task) else value
                if isinstance(shadow, Shadow) and shadow not in found.shadows:
                    found.shadows.append(shadow)
    return found


def _import_all(entry: str, where: str) -> Iterable[ModuleType]:
    module = _import(entry, where)
    yield module
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), f"{entry}."):
        yield _import(info.name, where)


def _import(name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            raise DiscoveryError(f"cannot import {where}: {error}") from None
        raise DiscoveryError(f"cannot import {where}: {error}", _trace(error)) from None
    except Exception as error:
        raise DiscoveryError(f"importing {where} failed: {error}", _trace(error)) from None


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def assemble(loaded: Loaded, found: Discovered) -> Shadow:
    """The shadow a worker runs: made from the settings, with every discovered task on
    it and the ``[task.NAME]`` tables applied. Raises :class:`ConfigError` for clashes,
    tables naming no task, and when no task was found."""
    shadow = Shadow()
    problems = gather(shadow, found)
    problems += apply_tables(loaded, shadow)
    if not problems and not user_tasks(shadow) and not found.functions:
        entries = ", ".join(loaded.settings.tasks) or "none"
        problems.append(
            Problem(
                str(loaded.origin(("tasks",))),
                f"no tasks found (tasks: {entries}); declare them with @shadow.task on a "
                "module-level shadow = Shadow() in those modules",
            )
        )
    if problems:
        raise ConfigError(problems)
    return shadow


def gather(shadow: Shadow, found: Discovered) -> list[Problem]:
    """Register on ``shadow`` the tasks of the discovered shadows that name it and of
    the collections; the clashes are returned."""
    problems: list[Problem] = []
    for other in found.shadows:
        if (other.name, other.url) != (shadow.name, shadow.url):
            logger.warning(
                "Skipping the tasks of %r: this worker runs shadow %r on %s",
                other,
                shadow.name,
                shadow.url,
            )
            continue
        for function in other.tasks.values():
            if unwrapped(function) not in standard_tasks:
                _register(shadow, function, problems)
    for function in found.functions:
        _register(shadow, function, problems)
    return problems


def _register(shadow: Shadow, function: Callable[..., Any], problems: list[Problem]) -> None:
    try:
        shadow.register(function)
    except (ValueError, TypeError) as error:
        problems.append(Problem("", str(error)))


def user_tasks(shadow: Shadow) -> list[str]:
    """The names of the tasks on ``shadow`` that are not built in."""
    return sorted(n for n, f in shadow.tasks.items() if unwrapped(f) not in standard_tasks)


def apply_tables(loaded: Loaded, shadow: Shadow) -> list[Problem]:
    """Put the ``[task.NAME]`` tables into effect on ``shadow``'s tasks; the problems
    (tables naming no task, values that cannot work) are returned."""
    problems: list[Problem] = []
    names = {name.lower(): name for name in shadow.tasks}
    for spelled, table in loaded.settings.task.items():
        origin = loaded.table_origin(spelled)
        name = spelled if spelled in shadow.tasks else names.get(spelled.lower())
        if name is None:
            hint = did_you_mean(spelled, shadow.tasks)
            problems.append(Problem(origin, f"[task.{spelled}] names no registered task{hint}"))
            continue
        function = shadow.tasks[name]
        own = declared(function)
        try:
            changes = overridden(table, own)
        except ValueError as error:
            problems.append(Problem(origin, str(error)))
            continue
        changed = {behaviour_kind(type(change)) for change in changes.values()}
        kept = [
            behaviour
            for behaviour in getattr(function, BEHAVIOURS_ATTRIBUTE, ())
            if behaviour_kind(type(behaviour)) not in changed
        ]
        handle = function if isinstance(function, Task) else Task(shadow, function)
        derived = handle.with_behaviours([*kept, *changes.values()])
        if table.results is not None:
            derived.__shadows_results__ = table.results
        shadow.tasks[name] = derived
    return problems
