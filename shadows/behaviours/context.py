"""Dependencies that hand the task a piece of its own run: the shadow, the worker, the
execution, its key, one of its arguments, a logger."""

from __future__ import annotations

import logging
from collections.abc import Hashable, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from shadows.behaviours.base import Context, Dependency

if TYPE_CHECKING:
    from shadows.core.execution import Execution

_MISSING = object()


class CurrentShadowDependency(Dependency):
    """The :class:`~shadows.Shadow` the task was scheduled on (to schedule more work)."""

    async def resolve(self, context: Context, parameter: str) -> Any:
        return context.shadow


class CurrentWorkerDependency(Dependency):
    """The :class:`~shadows.Worker` running the task."""

    async def resolve(self, context: Context, parameter: str) -> Any:
        return context.worker


class _CurrentExecution(Dependency):
    """The :class:`~shadows.Execution` being run (key, attempt, when, arguments)."""

    async def resolve(self, context: Context, parameter: str) -> Any:
        return context.execution


class _TaskKey(Dependency):
    """The key of the task being run."""

    async def resolve(self, context: Context, parameter: str) -> Any:
        return context.execution.key


class _TaskArgument(Dependency):
    """One of the task's arguments, for use inside other dependencies.

    Looked up by ``name``, or by the parameter name this dependency is declared under.
    A missing argument is an error unless ``optional``, which gives ``None``.
    """

    def __init__(self, name: str | None = None, optional: bool = False) -> None:
        self.name = name
        self.optional = optional

    @property
    def cache_key(self) -> Hashable:
        return ("argument", self.name, self.optional) if self.name else id(self)

    async def resolve(self, context: Context, parameter: str) -> Any:
        name = self.name or parameter
        value = context.task_arguments.get(name, _MISSING)
        if value is _MISSING:
            if self.optional:
                return None
            raise KeyError(
                f"task {context.execution.function_name} has no argument {name!r} "
                "(use TaskArgument(optional=True) if it may be absent)"
            )
        return value

    def describe(self) -> str:
        return f"TaskArgument({self.name!r})" if self.name else "TaskArgument()"


class TaskLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the task, key, attempt and worker as ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class _TaskLogger(Dependency):
    """A ``logging.LoggerAdapter`` named ``shadows.task.<name>`` with the run's context."""

    async def resolve(self, context: Context, parameter: str) -> Any:
        execution = context.execution
        return TaskLoggerAdapter(
            logging.getLogger(f"shadows.task.{execution.function_name}"),
            {
                "task": execution.function_name,
                "key": execution.key,
                "attempt": execution.attempt,
                "worker": context.worker.name,
            },
        )


# The public spellings are functions typed as the value the task receives, so that
# ``shadows: Shadow = CurrentShadow()`` type-checks.


def CurrentExecution() -> Execution:
    """The :class:`~shadows.Execution` being run (key, attempt, when, arguments)."""
    return cast("Execution", _CurrentExecution())


def TaskKey() -> str:
    """The key of the task being run."""
    return cast(str, _TaskKey())


def TaskArgument(name: str | None = None, optional: bool = False) -> Any:
    """One of the task's arguments (by ``name``, or by the parameter name), for dependencies."""
    return _TaskArgument(name, optional)


def TaskLogger() -> logging.LoggerAdapter[logging.Logger]:
    """A logger adapter carrying the task name, key, attempt and worker."""
    return cast("logging.LoggerAdapter[logging.Logger]", _TaskLogger())
