"""The mechanism behind FastAPI-style parameter defaults.

A task declares what it needs as parameter defaults (``retry: Retry = Retry(...)``). The
worker inspects each task's signature once (:func:`plan_for`) and, for every run, resolves
those defaults into values inside one :class:`Context`, whose exit stack tears down what
the dependencies opened after the task ends, in reverse order.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Hashable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar
from weakref import WeakKeyDictionary

from shadows.core.functions import describe, is_async

if TYPE_CHECKING:
    from shadows.core.execution import Execution


D = TypeVar("D", bound="Dependency")

#: Behaviours a task declares outside its signature (the ``@shadow.task`` options and
#: the config file's ``[task.NAME]`` tables), a tuple of dependencies on the registered
#: task object: each replaces the parameter default of its kind if the task has one (the
#: task then receives it there), and otherwise acts without being passed to the task.
BEHAVIOURS_ATTRIBUTE = "__shadows_behaviours__"


class Dependency:
    """A parameter default that the worker replaces with a value when the task runs.

    Subclasses implement :meth:`resolve`. ``single`` dependencies (retry policies,
    timeouts, ...) may appear only once in a task's signature.
    """

    single: ClassVar[bool] = False
    #: Whether the behaviour's scripts join global keys (home prefix) with the message:
    #: a task declaring one lives in the home shard (see :mod:`shadows.core.routing`).
    needs_home: ClassVar[bool] = False

    async def resolve(self, context: Context, parameter: str) -> Any:
        """The value for ``parameter`` in this run."""
        raise NotImplementedError

    @property
    def cache_key(self) -> Hashable:
        """Dependencies with the same cache key are resolved once per run and shared."""
        return id(self)

    def describe(self) -> str:
        return type(self).__name__


class DependencyError(Exception):
    """A dependency failed to resolve, so the task body never ran."""

    def __init__(self, parameter: str, dependency: Dependency, error: BaseException) -> None:
        super().__init__(
            f"dependency {dependency.describe()} for parameter {parameter!r} failed: "
            f"{type(error).__name__}: {error}"
        )
        self.parameter = parameter
        self.dependency = dependency


class Named(Protocol):
    """What this layer knows of the shadow and the worker of a run: they are defined above
    it (``CurrentShadow``/``CurrentWorker`` hand the task the real objects)."""

    @property
    def name(self) -> str: ...


@dataclass
class Context:
    """Everything a dependency may draw on while one task run is resolved."""

    shadow: Named
    worker: Named
    execution: Execution
    stack: AsyncExitStack
    values: dict[Hashable, Any] = field(default_factory=dict)
    #: The task's dependency parameters resolved so far (kept after a failure too).
    arguments: dict[str, Any] = field(default_factory=dict)
    #: The resolved behaviours declared outside the signature (not passed to the task).
    behaviours: list[Any] = field(default_factory=list)
    _task_arguments: dict[str, Any] | None = field(default=None, repr=False)

    async def resolve(self, dependency: Dependency, parameter: str) -> Any:
        """Resolve ``dependency`` once for this run, sharing the value with later asks."""
        key = dependency.cache_key
        try:
            return self.values[key]
        except KeyError:
            value = self.values[key] = await dependency.resolve(self, parameter)
            return value

    @property
    def task_arguments(self) -> dict[str, Any]:
        """The task's own arguments by parameter name (defaults applied)."""
        if self._task_arguments is None:
            self._task_arguments = task_arguments(self.execution)
        return self._task_arguments


def task_arguments(execution: Execution) -> dict[str, Any]:
    """The arguments of ``execution`` by parameter name, defaults applied, dependencies
    left out."""
    signature = plan_for(execution.function).signature
    bound = signature.bind_partial(*execution.args, **execution.kwargs)
    bound.apply_defaults()
    return {
        name: value for name, value in bound.arguments.items() if not isinstance(value, Dependency)
    }


@dataclass(frozen=True)
class TaskPlan:
    """What the worker needs to know about a task function, computed once."""

    function: Callable[..., Any]
    signature: inspect.Signature
    dependencies: tuple[tuple[str, Dependency], ...]
    is_async: bool
    #: ``(required, total)`` positional parameters when every parameter may be given by
    #: position (no ``*args``, ``**kwargs`` or keyword-only): then a call with only
    #: positional arguments binds exactly when their number is in that range.
    positional: tuple[int, int] | None = None
    #: Behaviours declared outside the signature (see ``BEHAVIOURS_ATTRIBUTE``).
    behaviours: tuple[Dependency, ...] = ()
    #: ``all``'s answers by kind (asked for every add and every run).
    _found: dict[type[Dependency], tuple[Dependency, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def find(self, kind: type[D]) -> D | None:
        """The task's declared dependency of ``kind``, if it has one."""
        found = self.all(kind)
        return found[0] if found else None

    def all(self, kind: type[D]) -> tuple[D, ...]:
        """Every declared dependency of ``kind`` (the decorator's first)."""
        try:
            return self._found[kind]  # type: ignore[return-value]
        except KeyError:
            declared = [d for _, d in self.dependencies if isinstance(d, kind)]
            found = self._found[kind] = (
                *(d for d in self.behaviours if isinstance(d, kind)),
                *declared,
            )
            return found  # type: ignore[return-value]

    @functools.cached_property
    def needs_home(self) -> bool:
        """Whether the task lives in the home shard (see :mod:`shadows.core.routing`)."""
        return any(d.needs_home for d in self.behaviours) or any(
            d.needs_home for _, d in self.dependencies
        )


_plans: WeakKeyDictionary[Callable[..., Any], TaskPlan] = WeakKeyDictionary()


def plan_for(function: Callable[..., Any]) -> TaskPlan:
    """Inspect ``function`` once; raises ``ValueError`` for an invalid declaration."""
    try:
        return _plans[function]
    except (KeyError, TypeError):  # TypeError: an object that cannot be weakly referenced
        pass
    signature = inspect.signature(function)
    dependencies: list[tuple[str, Dependency]] = []
    seen_single: dict[type[Dependency], str] = {}
    for name, parameter in signature.parameters.items():
        default = parameter.default
        if not isinstance(default, Dependency):
            continue
        if default.single:
            kind = _single_kind(type(default))
            if kind in seen_single:
                raise ValueError(
                    f"{describe(function)}: only one {kind.__name__} dependency is allowed "
                    f"(parameters {seen_single[kind]!r} and {name!r})"
                )
            seen_single[kind] = name
        dependencies.append((name, default))
    hidden: list[Dependency] = []
    for behaviour in getattr(function, BEHAVIOURS_ATTRIBUTE, ()):
        kind = behaviour_kind(type(behaviour))
        for index, (name, dependency) in enumerate(dependencies):
            if behaviour_kind(type(dependency)) is kind:
                dependencies[index] = (name, behaviour)
                break
        else:
            hidden.append(behaviour)
    # Behaviours (retry, timeout, ...) first: they must exist even when another
    # dependency fails, so that the failure is retried by the task's own policy.
    dependencies.sort(key=lambda item: not item[1].single)
    plan = TaskPlan(
        function=function,
        signature=signature,
        dependencies=tuple(dependencies),
        is_async=is_async(function),
        positional=_positional_range(signature),
        behaviours=tuple(hidden),
    )
    with contextlib.suppress(TypeError):
        _plans[function] = plan
    return plan


def _positional_range(signature: inspect.Signature) -> tuple[int, int] | None:
    parameters = list(signature.parameters.values())
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(parameter.kind not in by_position for parameter in parameters):
        return None
    required = sum(parameter.default is inspect.Parameter.empty for parameter in parameters)
    return required, len(parameters)


def _single_kind(kind: type[Dependency]) -> type[Dependency]:
    """The topmost ``single`` class in ``kind``'s ancestry (Retry for ExponentialRetry)."""
    for ancestor in reversed(kind.__mro__):
        if isinstance(ancestor, type) and issubclass(ancestor, Dependency) and ancestor.single:
            return ancestor
    return kind


def behaviour_kind(kind: type[Dependency]) -> type[Dependency]:
    """The class right under :class:`Dependency` in ``kind``'s ancestry: Retry for
    ExponentialRetry, Perpetual for Cron, ConcurrencyLimit for itself."""
    for ancestor in reversed(kind.__mro__):
        if (
            isinstance(ancestor, type)
            and issubclass(ancestor, Dependency)
            and ancestor is not Dependency
        ):
            return ancestor
    return kind


async def resolve_arguments(plan: TaskPlan, context: Context) -> dict[str, Any]:
    """Values for the task's dependency parameters, resolved in ``context``.

    A parameter the caller passed explicitly keeps its value, unless that value is itself
    a dependency (``retry=Retry(attempts=5)`` from the producer), which is resolved in place
    of the declared one. Values are written into the context's ``arguments`` as they
    resolve, so that when a later dependency fails the worker can still consult the
    behaviours resolved before it.
    """
    for behaviour in plan.behaviours:
        try:
            context.behaviours.append(await context.resolve(behaviour, ""))
        except Exception as error:
            raise DependencyError("", behaviour, error) from error
    explicit = context.execution.kwargs
    for name, dependency in plan.dependencies:
        if name in explicit:
            if not isinstance(explicit[name], Dependency):
                continue
            dependency = explicit[name]
        try:
            context.arguments[name] = await context.resolve(dependency, name)
        except DependencyError:
            raise
        except Exception as error:
            raise DependencyError(name, dependency, error) from error
    return context.arguments


def argument_bucket(base: str, argument: str, arguments: Mapping[str, Any], owner: str) -> str:
    """``base`` narrowed to one value of ``argument``: how per-argument limits name what
    they count. ``owner`` starts the error for a task that has no such argument."""
    try:
        value = arguments[argument]
    except KeyError:
        raise KeyError(f"{owner}: the task has no such argument") from None
    rendered = value if isinstance(value, str) else repr(value)
    return f"{base}:{argument}={rendered}"
