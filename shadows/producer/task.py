"""``Task[P, R]``: the typed handle ``@shadow.task`` returns.

The handle keeps the function's parameter types (``send.schedule("x")`` is a type error
where ``send`` takes an ``int``), schedules calls on its shadow with the key its template
gives, and, called directly, runs the function itself in-process. It is what the shadow
registers: it carries the behaviours declared in the decorator (see
``dependencies.base.BEHAVIOURS_ATTRIBUTE``), so the worker treats them exactly as the same
objects declared as parameter defaults.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import string
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, ParamSpec, Protocol, TypeVar

from shadows.behaviours.base import Dependency, behaviour_kind, plan_for
from shadows.behaviours.concurrency import ConcurrencyLimit
from shadows.behaviours.flow import Cooldown, Debounce, RateLimit
from shadows.behaviours.perpetual import Perpetual
from shadows.behaviours.retry import Retry
from shadows.behaviours.timeout import Timeout
from shadows.core.execution import Execution
from shadows.core.functions import NAME_ATTRIBUTE, describe, task_name
from shadows.settings.problems import did_you_mean

P = ParamSpec("P")
R = TypeVar("R")

#: A key template over the task's arguments (``"welcome-{customer_id}"``), or a function
#: of the task's arguments returning the key.
KeySpec = str | Callable[..., str]


class Producer(Protocol):
    """What a handle needs of its shadow."""

    name: str

    async def schedule(self, execution: Execution, mode: str = "add") -> str: ...


def validate_when(when: datetime | None) -> datetime | None:
    """``when`` if it is a timezone-aware datetime (or ``None``); a clear error if not."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise TypeError(f"when must be a timezone-aware datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise ValueError(
            "when must be timezone-aware (for example datetime.now(timezone.utc)); "
            f"got the naive datetime {when.isoformat()}"
        )
    return when


class Task(Generic[P, R]):
    """A task declared with ``@shadow.task``: ``await task.schedule(...)`` runs it on a
    worker, ``task.options(when=, delay=, key=)`` schedules it later or under another key,
    and ``await task(...)`` runs the function here and now."""

    def __init__(
        self,
        shadow: Producer,
        function: Callable[P, R],
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
    ) -> None:
        if not callable(function):
            raise TypeError(f"@shadow.task decorates a function, not {function!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"A task name must be a non-empty string, not {name!r}")
        self.shadow = shadow
        self.function = function
        self.name = name or task_name(function)
        plan = plan_for(function)
        self.behaviours = _behaviours(
            self.name,
            plan.dependencies,
            retry,
            timeout,
            perpetual,
            concurrency,
            Flow(cooldown, debounce, rate_limit),
        )
        self.key = key
        self._key = _key_maker(self.name, key, plan.signature)
        self._signature, self._positional = plan.signature, plan.positional
        # What the rest of shadows reads off a task object (see functions.py, base.py).
        self.__shadows_task_name__ = self.name
        self.__shadows_function__ = function
        self.__shadows_behaviours__ = self.behaviours
        #: Whether the worker keeps the task's return value (``results=False``: never).
        self.__shadows_results__ = results
        self.__wrapped__ = function  # inspect.signature() shows the function's
        self.__name__ = getattr(function, "__name__", self.name)
        self.__qualname__ = getattr(function, "__qualname__", self.name)
        self.__module__ = getattr(function, "__module__", __name__)
        self.__doc__ = getattr(function, "__doc__", None)
        if name is not None:
            # So that the bare function is known by the same name (a bound method cannot
            # be given attributes: its handle alone carries the name).
            with contextlib.suppress(AttributeError, TypeError):
                setattr(function, NAME_ATTRIBUTE, name)

    def __repr__(self) -> str:
        return f"<Task {self.name} on {self.shadow!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function itself, in this process (no worker, no Redis)."""
        return self.function(*args, **kwargs)

    def with_behaviours(self, behaviours: Sequence[Dependency]) -> Task[P, R]:
        """The same task with ``behaviours`` in place of the declared ones (the config
        file's ``[task.NAME]`` tables, once merged with the decorator's)."""
        derived = copy.copy(self)
        derived.behaviours = derived.__shadows_behaviours__ = tuple(behaviours)
        return derived

    async def schedule(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """Schedule a call now, under the key the template gives (a fresh one without a
        template); while a task with that key is scheduled, queued or running, this
        does nothing. Returns the :class:`Execution`."""
        execution = self.execution(args, kwargs, None, None)
        await self.shadow.schedule(execution)
        return execution

    async def replace(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """Swap the arguments of the task with this call's key for these, due now (or
        schedule it): the key comes from the template."""
        execution = self.execution(args, kwargs, None, None, replacing=True)
        await self.shadow.schedule(execution, mode="replace")
        return execution

    def options(
        self,
        *,
        when: datetime | None = None,
        delay: timedelta | None = None,
        key: str | None = None,
    ) -> Scheduling[P]:
        """Schedule at ``when`` or after ``delay`` (not both), or under ``key`` instead of
        the template's: ``await task.options(delay=timedelta(hours=1)).schedule(...)``."""
        return Scheduling(self, when, delay, key)

    def execution(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        when: datetime | None,
        key: str | None,
        replacing: bool = False,
    ) -> Execution:
        """The checked call of ``args`` and ``kwargs`` as an :class:`Execution`."""
        # The common call (positional arguments only, a plain signature) is checked by
        # counting; anything else is bound to the signature.
        positional = self._positional
        if kwargs or positional is None or not positional[0] <= len(args) <= positional[1]:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{self.name}(): {error}") from None
        if key is None and self._key is not None:
            key = self._key(args, kwargs)
        if key is None:
            if replacing:
                raise ValueError(
                    f"{self.name}.replace() needs a key: give the task a key template "
                    "(@shadow.task(key=...)) or use .options(key=...).replace(...)"
                )
            key = str(uuid.uuid4())
        return Execution(self, args, kwargs, when or datetime.now(UTC), key)


class Scheduling(Generic[P]):
    """A task with scheduling options (see :meth:`Task.options`)."""

    def __init__(
        self,
        task: Task[P, Any],
        when: datetime | None,
        delay: timedelta | None,
        key: str | None,
    ) -> None:
        if when is not None and delay is not None:
            raise ValueError(f"{task.name}.options(): give when or delay, not both")
        if delay is not None and not isinstance(delay, timedelta):
            raise TypeError(f"delay must be a timedelta, not {type(delay).__name__}")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"A task key must be a non-empty string, not {key!r}")
        self.task = task
        self.when = validate_when(when)
        self.delay = delay
        self.key = key

    def _when(self) -> datetime | None:
        return datetime.now(UTC) + self.delay if self.delay is not None else self.when

    async def schedule(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """As :meth:`Task.schedule`, with these options."""
        execution = self.task.execution(args, kwargs, self._when(), self.key)
        await self.task.shadow.schedule(execution)
        return execution

    async def replace(self, *args: P.args, **kwargs: P.kwargs) -> Execution:
        """As :meth:`Task.replace`, with these options."""
        execution = self.task.execution(args, kwargs, self._when(), self.key, replacing=True)
        await self.task.shadow.schedule(execution, mode="replace")
        return execution


class Flow(NamedTuple):
    """The decorator's flow-control options (see :mod:`dependencies.flow`)."""

    cooldown: Cooldown | None
    debounce: Debounce | None
    rate_limit: RateLimit | Sequence[RateLimit] | None


def _behaviours(
    task: str,
    parameters: tuple[tuple[str, Dependency], ...],
    retry: Retry | None,
    timeout: Timeout | None,
    perpetual: Perpetual | None,
    concurrency: ConcurrencyLimit | Sequence[ConcurrencyLimit] | None,
    flow: Flow,
) -> tuple[Dependency, ...]:
    """The decorator's behaviours, checked: the right kinds, none also declared as a
    parameter default."""
    limits = [concurrency] if isinstance(concurrency, ConcurrencyLimit) else list(concurrency or ())
    rates = flow.rate_limit
    rate_limits = [rates] if isinstance(rates, RateLimit) else list(rates or ())
    given: list[tuple[str, Any, type[Dependency]]] = [
        ("retry", retry, Retry),
        ("timeout", timeout, Timeout),
        ("perpetual", perpetual, Perpetual),
        *(("concurrency", limit, ConcurrencyLimit) for limit in limits),
        ("cooldown", flow.cooldown, Cooldown),
        ("debounce", flow.debounce, Debounce),
        *(("rate_limit", limit, RateLimit) for limit in rate_limits),
    ]
    behaviours: list[Dependency] = []
    for option, value, kind in given:
        if value is None:
            continue
        if not isinstance(value, kind):
            raise TypeError(
                f"{task}: {option}= takes a {kind.__name__} (or a subclass), not {value!r}"
            )
        for parameter, dependency in parameters:
            if behaviour_kind(type(dependency)) is kind:
                raise ValueError(
                    f"{task}: {kind.__name__} is declared twice, as {option}= in "
                    f"@shadow.task and as the default of parameter {parameter!r}: keep one"
                )
        behaviours.append(value)
    return tuple(behaviours)


def _key_maker(
    task: str, key: KeySpec | None, signature: inspect.Signature
) -> Callable[[tuple[Any, ...], dict[str, Any]], str] | None:
    """A function of a call's arguments giving its key, checked against the signature."""
    if key is None:
        return None
    if callable(key):
        function = key

        def called(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
            made = function(*args, **kwargs)
            if not isinstance(made, str) or not made:
                raise ValueError(f"{task}: the key function gave {made!r}, not a non-empty string")
            return made

        return called
    if not isinstance(key, str) or not key:
        raise TypeError(f"{task}: key= takes a template string or a function, not {key!r}")
    parameters = [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and not isinstance(parameter.default, Dependency)
    ]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(key) if field is not None]
    except ValueError as error:
        raise ValueError(f"{task}: invalid key template {key!r}: {error}") from None
    for field in fields:
        root = field.split(".", 1)[0].split("[", 1)[0]
        if root in parameters or (open_ended and root.isidentifier()):
            continue
        listed = ", ".join(parameters) or "none"
        raise ValueError(
            f"{task}: the key template {key!r} names {root or '{}'!r}, which is not a "
            f"parameter of the task (parameters: {listed}){did_you_mean(root, parameters)}"
        )

    def formatted(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return key.format_map(bound.arguments)

    return formatted


def describe_task(function: Callable[..., Any]) -> str:
    """``module.qualname`` of a task's function, for messages about clashes."""
    inner = getattr(function, "__shadows_function__", function)
    module = getattr(inner, "__module__", None)
    qualname = getattr(inner, "__qualname__", None) or describe(inner)
    return f"{module}.{qualname}" if module else qualname
