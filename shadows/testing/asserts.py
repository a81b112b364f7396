"""Assertions about what a shadow holds, for an application's tests.

Each reads a snapshot of the shadow (every task not started yet: ``scheduled`` in the
queue or ``queued`` on the stream) and, when it fails, says what is there instead.
Arguments are compared by parameter name once bound to the task's signature (a task
registered on the shadow), so ``send(1)`` matches ``send(customer_id=1)``; the arguments
given are the ones compared (``assert_task_scheduled(shadow, send)`` matches any call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shadows.behaviours import Dependency, plan_for
from shadows.core.functions import task_name
from shadows.operations.snapshot import SnapshotTask
from shadows.producer.shadow import Shadow

TaskRef = Callable[..., Any] | str

#: How many tasks a failure message lists before it summarises the rest.
LISTED = 20


async def assert_task_scheduled(
    shadow: Shadow, fn_or_name: TaskRef, /, *args: Any, **kwargs: Any
) -> SnapshotTask:
    """Assert that a call of ``fn_or_name`` with these arguments waits to run; returns it."""
    tasks = await _pending(shadow)
    found = [task for task in tasks if _matches(shadow, task, fn_or_name, args, kwargs)]
    if not found:
        raise AssertionError(
            f"{_expected(fn_or_name, args, kwargs)} is not scheduled; "
            f"{_listing(tasks, _name(fn_or_name))}"
        )
    return found[0]


async def assert_task_not_scheduled(
    shadow: Shadow, fn_or_name: TaskRef, /, *args: Any, **kwargs: Any
) -> None:
    """Assert that no call of ``fn_or_name`` with these arguments waits to run."""
    tasks = await _pending(shadow)
    found = [task for task in tasks if _matches(shadow, task, fn_or_name, args, kwargs)]
    if found:
        shown = "; ".join(_describe(task) for task in found[:LISTED])
        raise AssertionError(
            f"{_expected(fn_or_name, args, kwargs)} is scheduled ({len(found)}): {shown}"
        )


async def assert_task_count(shadow: Shadow, count: int, fn_or_name: TaskRef | None = None) -> None:
    """Assert that exactly ``count`` tasks (of ``fn_or_name``, a task function, handle or
    name, or of any task) wait to run."""
    tasks = await _pending(shadow)
    if fn_or_name is not None:
        name = _name(fn_or_name)
        tasks = [task for task in tasks if task.function_name == name]
    if len(tasks) != count:
        what = f"tasks of {_name(fn_or_name)}" if fn_or_name is not None else "tasks"
        raise AssertionError(
            f"expected {count} {what} scheduled, found {len(tasks)}; {_listing(tasks, None)}"
        )


async def assert_no_tasks(shadow: Shadow) -> None:
    """Assert that nothing waits to run on ``shadow``."""
    tasks = await _pending(shadow)
    if tasks:
        raise AssertionError(f"expected no tasks scheduled; {_listing(tasks, None)}")


async def _pending(shadow: Shadow) -> list[SnapshotTask]:
    return list((await shadow.snapshot()).future)


def _name(function: TaskRef) -> str:
    return function if isinstance(function, str) else task_name(function)


def _matches(
    shadow: Shadow,
    task: SnapshotTask,
    function: TaskRef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bool:
    if task.function_name != _name(function):
        return False
    if not args and not kwargs:
        return True
    target = task.function if not isinstance(task.function, str) else None
    if target is None and not isinstance(function, str):
        target = function
    if target is None:  # no signature to bind to: compare as given
        return task.args[: len(args)] == args and all(
            task.kwargs.get(name, _MISSING) == value for name, value in kwargs.items()
        )
    signature = plan_for(target).signature
    try:
        wanted = signature.bind_partial(*args, **kwargs).arguments
        actual = signature.bind(*task.args, **task.kwargs)
    except TypeError:
        return False
    actual.apply_defaults()
    return all(
        name in actual.arguments and actual.arguments[name] == value
        for name, value in wanted.items()
        if not isinstance(value, Dependency)
    )


_MISSING = object()


def _expected(function: TaskRef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    if not args and not kwargs:
        return f"a call of {_name(function)}"
    return _call(_name(function), args, kwargs)


def _call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_short(value) for value in args]
    parts += [f"{key}={_short(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(task: SnapshotTask) -> str:
    try:
        call = _call(task.function_name, task.args, task.kwargs)
    except Exception as error:  # another codec, a bad signature: still name the task
        call = f"{task.function_name}(<arguments unreadable: {type(error).__name__}>)"
    return f"{call} [key={task.key}, {task.state}, due {task.when.isoformat()}]"


def _listing(tasks: list[SnapshotTask], name: str | None) -> str:
    if not tasks:
        return "nothing is scheduled"
    if name is not None:
        same = [task for task in tasks if task.function_name == name]
        if same:
            tasks = same
            head = f"scheduled calls of {name}"
        else:
            head = "scheduled instead"
    else:
        head = "scheduled"
    shown = "; ".join(_describe(task) for task in tasks[:LISTED])
    more = f"; and {len(tasks) - LISTED} more" if len(tasks) > LISTED else ""
    return f"{head} ({len(tasks)}): {shown}{more}"


__all__ = [
    "assert_no_tasks",
    "assert_task_count",
    "assert_task_not_scheduled",
    "assert_task_scheduled",
]
