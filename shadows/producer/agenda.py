"""``Agenda``: many calls collected, then spread evenly over a window.

Scattering writes every call at its own moment of the window under a stable key (the
agenda's name, the call's place and a digest of the call), in batches. Keys make it
idempotent: scattering the same agenda again while its calls wait (from another process
too) adds nothing; a call is only added again once its earlier run has finished.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, overload

from shadows.core.execution import Execution
from shadows.core.functions import task_name
from shadows.producer.task import validate_when

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class _Call:
    function: Callable[..., Any] | str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str | None


class Agenda:
    """Calls to spread over a window: ``agenda.add(task)(...)`` collects one, ``await
    agenda.scatter(shadow, over=timedelta(hours=1))`` schedules them all.

    ``name`` tells agendas apart in the keys of their calls (default ``"agenda"``): two
    agendas of the same calls under the same name are the same work.
    """

    def __init__(self, name: str = "agenda") -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"An agenda's name must be a non-empty word, not {name!r}")
        self.name = name
        self._calls: list[_Call] = []

    def __len__(self) -> int:
        return len(self._calls)

    def __repr__(self) -> str:
        return f"Agenda({self.name!r}, {len(self._calls)} calls)"

    @overload
    def add(self, function: Callable[P, Any], key: str | None = None) -> Callable[P, None]: ...

    @overload
    def add(self, function: str, key: str | None = None) -> Callable[..., None]: ...

    def add(
        self, function: Callable[P, Any] | str, key: str | None = None
    ) -> Callable[P, None] | Callable[..., None]:
        """Collect a call of ``function`` (a task, or a task's name): ``agenda.add(task)(
        arguments)``; ``key`` replaces the stable key the agenda would give it. The
        arguments are checked when the agenda is scattered."""
        if not isinstance(function, str) and not callable(function):
            raise TypeError(f"An agenda collects calls of tasks, not {function!r}")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"A task key must be a non-empty string, not {key!r}")

        def collect(*args: Any, **kwargs: Any) -> None:
            self._calls.append(_Call(function, args, kwargs, key))

        return collect

    async def scatter(
        self,
        shadow: Shadow,
        over: timedelta,
        jitter: timedelta | None = None,
        start: datetime | None = None,
    ) -> list[Execution]:
        """Schedule every call, evenly spaced over ``over`` from ``start`` (now): call
        *i* of *n* at ``start + over * i / n``, moved by up to ``jitter`` either way
        (the same amount each time for the same key) but kept inside the window.

        Returns the executions, in the order the calls were added; those whose key was
        already scheduled, queued or running were left as they were (see
        :meth:`Shadow.add`). Raises like ``Shadow.add`` for a call whose arguments do not
        fit its task, before anything is written.
        """
        if not isinstance(over, timedelta) or over < timedelta(0):
            raise ValueError(f"over must be a non-negative timedelta, not {over!r}")
        if jitter is not None and (not isinstance(jitter, timedelta) or jitter < timedelta(0)):
            raise ValueError(f"jitter must be a non-negative timedelta, not {jitter!r}")
        begin = validate_when(start) or datetime.now(UTC)
        count = len(self._calls)
        planned: list[tuple[_Call, datetime, str]] = []
        for index, call in enumerate(self._calls):
            key = call.key or self._key(shadow, index, call)
            when = begin + over * index / count
            if jitter:
                offset = random.Random(key).uniform(-1.0, 1.0) * jitter
                when = min(max(when + offset, begin), begin + over)
            planned.append((call, when, key))
        # A call whose arguments do not fit raises inside the block: nothing is written.
        executions: list[Execution] = []
        async with shadow.batch() as batch:
            for call, when, key in planned:
                executions.append(batch.add(call.function, when, key)(*call.args, **call.kwargs))
        return executions

    def _key(self, shadow: Shadow, index: int, call: _Call) -> str:
        """``agenda:{name}:{index}:{digest of the call}``: the same call at the same place
        of the same agenda gets the same key, in any process."""
        name = call.function if isinstance(call.function, str) else task_name(call.function)
        args, kwargs = shadow.payloads.encode(call.args, call.kwargs)
        digest = hashlib.sha256(b"\0".join([name.encode(), args, kwargs])).hexdigest()[:16]
        return f"agenda:{self.name}:{index}:{digest}"
