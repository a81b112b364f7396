"""Task callables of every shape: plain and async functions, ``functools.partial``,
bound methods, callable objects and test doubles (``AsyncMock``) are named, inspected
and called the same way; and collections of them loaded by ``module:attribute`` path."""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from types import FunctionType
from typing import Any
from unittest.mock import NonCallableMock

#: Set by ``@shadow.task(name=...)`` on the function it wraps, when the task's name is not
#: the function's own.
NAME_ATTRIBUTE = "__shadows_task_name__"
#: Set to ``False`` by ``@shadow.task(results=False)``: the task's return values are not
#: kept.
RESULTS_ATTRIBUTE = "__shadows_results__"
#: Set by a task handle (``@shadow.task``) on itself: the function it runs.
FUNCTION_ATTRIBUTE = "__shadows_function__"


def unwrapped(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function a task handle runs (``function`` itself for anything else)."""
    inner: Callable[..., Any] | None = getattr(function, FUNCTION_ATTRIBUTE, None)
    return function if inner is None else inner


def same_function(first: Callable[..., Any], second: Callable[..., Any]) -> bool:
    """Whether two registrations are of one function: the same object, equal bound
    methods (a new one at every access), or a task handle and what it runs."""
    if first is second or first == second:
        return True
    inner, other = unwrapped(first), unwrapped(second)
    return inner is other or inner == other


def task_name(function: Callable[..., Any]) -> str:
    """The name a task is registered, sent and logged under.

    A partial takes the name of the function it wraps, a callable object its class's
    name. A mock has no name of its own: give it one (``mock.__name__ = "send"``).
    """
    if type(function) is FunctionType:  # the usual task, asked on every add and run
        explicit = function.__dict__.get(NAME_ATTRIBUTE)
        if isinstance(explicit, str) and explicit:
            return explicit
        return function.__name__ or "function"
    explicit = getattr(function, NAME_ATTRIBUTE, None)
    if isinstance(explicit, str) and explicit:
        return explicit
    if isinstance(function, functools.partial):
        return task_name(function.func)
    if isinstance(function, NonCallableMock):
        named = function.__dict__.get("__name__")
        if isinstance(named, str) and named:
            return named
        raise TypeError(
            f"{function!r} has no __name__: name the mock first "
            "(mock.__name__ = 'send_email') so that workers can find it"
        )
    name = getattr(function, "__name__", None)
    if isinstance(name, str) and name:
        return name
    if callable(function) and not isinstance(function, type):
        return type(function).__name__
    raise TypeError(f"A task must be a named function or callable object, not {function!r}")


def describe(function: Callable[..., Any]) -> str:
    """A name for messages about ``function``, even one that has none."""
    try:
        return task_name(function)
    except TypeError:
        return repr(function)


def is_async(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` gives a coroutine (a callable object's ``__call__``
    counts: ``inspect`` alone does not see it)."""
    function = unwrapped(function)
    if inspect.iscoroutinefunction(function):
        return True
    if inspect.isfunction(function) or inspect.ismethod(function):
        return False
    call = _call_method(function)
    return call is not None and inspect.iscoroutinefunction(call)


def annotated(function: Callable[..., Any]) -> Callable[..., Any]:
    """Where the annotations of ``function``'s parameters live: the wrapped function of a
    partial, the ``__call__`` of a callable object."""
    function = unwrapped(function)
    while isinstance(function, functools.partial):
        function = function.func
    if inspect.isroutine(function) or isinstance(function, NonCallableMock):
        return function
    call = _call_method(function)
    return call if call is not None else function


def _call_method(instance: object) -> Callable[..., Any] | None:
    """The ``__call__`` a callable object's class defines (not the metaclass's)."""
    for klass in type(instance).__mro__:
        call: Callable[..., Any] | None = vars(klass).get("__call__")
        if callable(call):
            return call
    return None


def load_collection(path: str) -> Iterable[Callable[..., Any]]:
    """Import ``"package.module:attribute"`` and return its functions.

    The attribute may be one function or an iterable of them. The current directory is
    importable, as it is for ``python -m``.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"Expected a task collection as 'module:attribute', not {path!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"Cannot import task module {module_name!r}: {error}") from error
    try:
        collection = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    functions = [collection] if callable(collection) else list(collection)
    for function in functions:
        if not callable(function):
            raise ValueError(f"{path} holds {function!r}, which is not a function")
    return functions
