"""The tasks a shadow can run, by name, and the rules for registering them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from shadows.behaviours.base import plan_for
from shadows.behaviours.concurrency import ConcurrencyLimit
from shadows.behaviours.flow import Cooldown, Debounce, RateLimit
from shadows.behaviours.perpetual import Perpetual
from shadows.behaviours.retry import Retry
from shadows.behaviours.timeout import Timeout
from shadows.core.execution import Execution
from shadows.core.functions import load_collection, same_function, task_name, unwrapped
from shadows.producer.task import KeySpec, Task, describe_task
from shadows.tasks import standard_tasks

P = ParamSpec("P")
R = TypeVar("R")

TaskFunction = Callable[..., Any]

logger = logging.getLogger("shadows.shadow")


class UnknownTaskError(KeyError):
    """A task name that is not registered on this shadow.

    A ``KeyError`` because it is a failed lookup by name (code that catches ``KeyError``
    catches it), but printed as its message rather than as the quoted repr of one.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class TaskRegistry:
    """The registered tasks of a shadow (the part of :class:`~shadows.Shadow` that
    declares, registers and looks up tasks)."""

    name: str
    tasks: dict[str, TaskFunction]

    if TYPE_CHECKING:  # provided by the Shadow: what a task handle schedules with

        async def schedule(self, execution: Execution, mode: str = "add") -> str: ...

    @overload
    def task(self, function: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        key: KeySpec | None = None,
        retry: Retry | None = None,
        timeout: Timeout | None = None,
        perpetual: Perpetual | None = None,
        concurrency: ConcurrencyLimit | Sequence[ConcurrencyLimit] | None = None,
        cooldown: Cooldown | None = None,
        debounce: Debounce | None = None,
        rate_limit: RateLimit | Sequence[RateLimit] | None = None,
        results: bool = True,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        function: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        key: KeySpec | None = None,
        retry: Retry | None = None,
        timeout: Timeout | None = None,
        perpetual: Perpetual | None = None,
        concurrency: ConcurrencyLimit | Sequence[ConcurrencyLimit] | None = None,
        cooldown: Cooldown | None = None,
        debounce: Debounce | None = None,
        rate_limit: RateLimit | Sequence[RateLimit] | None = None,
        results: bool = True,
    ) -> Any:
        """Declare and register a task: ``@shadow.task`` or ``@shadow.task(retry=...,
        key="welcome-{customer_id}", ...)`` (see :class:`~shadows.task.Task`);
        ``results=False`` keeps none of its return values."""

        def declare(function: Callable[..., Any]) -> Task[..., Any]:
            handle = Task(
                self,
                function,
                name=name,
                key=key,
                retry=retry,
                timeout=timeout,
                perpetual=perpetual,
                concurrency=concurrency,
                cooldown=cooldown,
                debounce=debounce,
                rate_limit=rate_limit,
                results=results,
            )
            self.register(handle)
            return handle

        return declare if function is None else declare(function)

    def register(self, function: TaskFunction) -> None:
        """Make ``function`` runnable by name on this shadow's workers.

        Registering the same function again is harmless; another function under a name
        already taken is an error, but for the built-in tasks, which a task of the same
        name replaces on this shadow.
        """
        if not callable(function):
            raise TypeError(f"A task must be a function or callable object, not {function!r}")
        name = task_name(function)
        plan_for(function)  # validates the dependency declarations early
        existing = self.tasks.get(name)
        if existing is not None and not same_function(existing, function):
            if unwrapped(function) in standard_tasks:
                return  # a built-in never displaces the application's task
            if unwrapped(existing) not in standard_tasks:
                raise ValueError(
                    f"Two different tasks named {name!r} on shadow {self.name!r}: "
                    f"{describe_task(existing)} and {describe_task(function)}; give one "
                    "another name (@shadow.task(name=...))"
                )
            logger.debug(
                "Task %s replaces the built-in task %s on %r", describe_task(function), name, self
            )
        self.tasks[name] = function

    def register_collection(self, path: str) -> None:
        """Register every function of the list at ``"package.module:attribute"``."""
        for function in load_collection(path):
            self.register(function)

    def _resolve_task(self, function: TaskFunction | str) -> TaskFunction:
        if isinstance(function, str):
            try:
                return self.tasks[function]
            except KeyError:
                known = ", ".join(sorted(self.tasks)) or "none"
                raise UnknownTaskError(
                    f"Unknown task {function!r} on shadow {self.name!r} (registered: {known})"
                ) from None
        if not callable(function):
            raise TypeError(f"A task must be a function or a registered name, not {function!r}")
        registered = self.tasks.get(task_name(function))
        if registered is None or not same_function(registered, function):
            self.register(function)
            return function
        return registered
