"""``Depends(factory)``: a value produced by a function of yours for each run."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar, cast, overload

from shadows.behaviours.base import Context, Dependency, DependencyError, plan_for

T = TypeVar("T")


class Dependent(Dependency):
    """The value of ``factory()`` for each run, torn down after the task.

    ``factory`` may be a sync or async function, a generator or async generator (the code
    after ``yield`` runs after the task, also when it fails, and sees its exception), or
    return an (async) context manager, which is entered and exited around the task. Its
    own parameters may be dependencies too. A factory is called once per run, however
    many parameters depend on it.
    """

    def __init__(self, factory: Callable[..., Any]) -> None:
        if not callable(factory):
            raise TypeError(f"Depends() needs a callable, not {factory!r}")
        self.factory = factory
        plan_for(factory)  # inspect its signature now, once

    @property
    def cache_key(self) -> Hashable:
        return ("depends", self.factory)

    def describe(self) -> str:
        return f"Depends({getattr(self.factory, '__qualname__', self.factory)!r})"

    async def resolve(self, context: Context, parameter: str) -> Any:
        plan = plan_for(self.factory)
        arguments: dict[str, Any] = {}
        for name, dependency in plan.dependencies:
            try:
                arguments[name] = await context.resolve(dependency, name)
            except DependencyError:
                raise
            except Exception as error:
                raise DependencyError(name, dependency, error) from error

        factory = self.factory
        if inspect.isasyncgenfunction(factory):
            return await context.stack.enter_async_context(
                contextlib.asynccontextmanager(factory)(**arguments)
            )
        if inspect.isgeneratorfunction(factory):
            return context.stack.enter_context(contextlib.contextmanager(factory)(**arguments))
        value = factory(**arguments)
        if inspect.isawaitable(value):
            value = await value
        if hasattr(value, "__aenter__") and hasattr(value, "__aexit__"):
            return await context.stack.enter_async_context(
                cast(AbstractAsyncContextManager[Any], value)
            )
        if hasattr(value, "__enter__") and hasattr(value, "__exit__"):
            return context.stack.enter_context(cast(AbstractContextManager[Any], value))
        return value


@overload
def Depends(factory: Callable[..., AsyncIterator[T]]) -> T: ...


@overload
def Depends(factory: Callable[..., Iterator[T]]) -> T: ...


@overload
def Depends(factory: Callable[..., AbstractAsyncContextManager[T]]) -> T: ...


@overload
def Depends(factory: Callable[..., AbstractContextManager[T]]) -> T: ...


@overload
def Depends(factory: Callable[..., Awaitable[T]]) -> T: ...


@overload
def Depends(factory: Callable[..., T]) -> T: ...


def Depends(factory: Callable[..., Any]) -> Any:
    """Declare a parameter whose value ``factory`` produces for each run.

    Typed as the factory's value so that ``db: Database = Depends(open_database)`` checks.
    """
    return Dependent(factory)
