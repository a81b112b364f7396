"""``Logged``: which task arguments may appear in log lines, and how a call is rendered."""

from __future__ import annotations

import contextlib
import inspect
import reprlib
import typing
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, Union
from weakref import WeakKeyDictionary

from shadows.core.functions import annotated, describe

_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200


class Logged:
    """Annotate a parameter with ``Annotated[T, Logged]`` to show its value in log lines.

    ``Logged(length_only=True)`` shows only the size of a value that has one, in the
    brackets of its kind: ``[len 3]`` for lists and other sequences, ``(len 3)`` for
    tuples, ``{len 3}`` for mappings and sets, ``'len 3'`` for strings and ``b'len 3'``
    for bytes. A value without a length (a number, ``None``) has nothing to hide behind
    a size, so it is shown as ``Logged`` shows it. Unannotated arguments appear as
    ``...`` so that secrets never reach the logs by accident.
    """

    def __init__(self, length_only: bool = False) -> None:
        self.length_only = length_only

    def render(self, value: Any) -> str:
        if self.length_only:
            try:
                size = len(value)
            except Exception:  # no length, or one that refuses (a 0-d array)
                pass
            else:
                return _sized(value, size)
        return _repr.repr(value)

    def __repr__(self) -> str:
        return f"Logged(length_only={self.length_only})"


def _sized(value: Any, size: int) -> str:
    """``len N`` in the brackets a literal of ``value``'s kind would have."""
    if isinstance(value, str):
        return f"'len {size}'"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"b'len {size}'"
    if isinstance(value, tuple):
        return f"(len {size})"
    if isinstance(value, Mapping | Set):
        return f"{{len {size}}}"
    return f"[len {size}]"


_FULL = Logged()

_ArgumentPlan = tuple[list[str], dict[str, Logged]]
_plans: WeakKeyDictionary[Callable[..., Any], _ArgumentPlan] = WeakKeyDictionary()


def _logged_marker(annotation: Any) -> Logged | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for extra in annotation.__metadata__:
            if extra is Logged:
                return _FULL
            if isinstance(extra, Logged):
                return extra
    elif typing.get_origin(annotation) is Union:
        for member in typing.get_args(annotation):
            marker = _logged_marker(member)
            if marker:
                return marker
    return None


def _plan(function: Callable[..., Any]) -> _ArgumentPlan:
    try:
        return _plans[function]
    except (KeyError, TypeError):
        pass
    try:
        hints: Any = typing.get_type_hints(annotated(function), include_extras=True)
    except Exception:
        # Objects typing cannot read (mocks, some callables): their raw annotations, if
        # they are a real dictionary at all.
        hints = getattr(function, "__annotations__", None)
    if not isinstance(hints, dict):
        hints = {}
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    markers = {
        name: marker
        for name, annotation in hints.items()
        if (marker := _logged_marker(annotation)) is not None
    }
    plan = (positional, markers)
    with contextlib.suppress(TypeError):
        _plans[function] = plan
    return plan


def render_call(
    function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> str:
    """``name(shown, secret=..., amount=150.0)`` for log lines."""
    positional, markers = _plan(function)
    parts: list[str] = []
    for index, value in enumerate(args):
        name = positional[index] if index < len(positional) else None
        marker = markers.get(name) if name else None
        parts.append(marker.render(value) if marker else "...")
    for name, value in kwargs.items():
        marker = markers.get(name)
        parts.append(f"{name}={marker.render(value) if marker else '...'}")
    return f"{describe(function)}({', '.join(parts)})"


def render_known_call(
    name: str,
    function: Callable[..., Any] | None,
    arguments: Callable[[], tuple[Sequence[Any], Mapping[str, Any]]],
) -> str:
    """:func:`render_call` for a stored call, when its function is known here (it says
    which arguments may be shown) and ``arguments()`` decodes; else the bare ``name``."""
    if function is None:
        return name
    try:
        args, kwargs = arguments()
    except Exception:  # not read, another codec, a bad signature, a malformed message
        return name
    return render_call(function, args, kwargs)
