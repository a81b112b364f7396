"""Flow control: ``Cooldown``, ``RateLimit`` and ``Debounce``.

Each is declared like ``Retry`` (a parameter default or a ``@shadow.task`` option) and
coordinated through Redis across every producer and worker. Cooldown and rate limits are
checked by the worker when a run is about to start (see ``throttle.py``); a debounce acts
when a call is submitted, in the producer (see ``debouncing.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from shadows.behaviours.base import Context, Dependency, argument_bucket


def _positive(value: timedelta, name: str) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValueError(f"{name} must be a positive timedelta, not {value!r}")
    if value < timedelta(milliseconds=1):
        raise ValueError(f"{name} must be at least a millisecond, not {value!r}")
    return value


def _scope(scope: str | None) -> str | None:
    if scope is not None and (not isinstance(scope, str) or not scope.isidentifier()):
        raise ValueError(f"scope must name an argument of the task, not {scope!r}")
    return scope


def milliseconds(value: timedelta) -> int:
    return max(1, int(value.total_seconds() * 1000))


class Scoped:
    """A behaviour counted per task, or per value of one of its arguments (``scope``).

    A mixin, not a ``Dependency``: each behaviour below is a kind of its own. Its
    buckets are global keys, so a task declaring one lives in the home shard.
    """

    needs_home: ClassVar[bool] = True

    scope: str | None

    async def resolve(self, context: Context, parameter: str) -> Any:
        return self

    def bucket(self, task_name: str, arguments: Mapping[str, Any]) -> str:
        """The name runs with these ``arguments`` are counted under."""
        if self.scope is None:
            return task_name
        owner = f"{type(self).__name__} scope {self.scope!r}"
        return argument_bucket(task_name, self.scope, arguments, owner)


class Cooldown(Scoped, Dependency):
    """After a run starts, drop (and log) further runs started within ``window``.

    Counted per task, or per value of the argument ``scope`` names. Retries of the run
    and redeliveries of the same message are not further runs: they are never dropped.
    """

    single = True

    def __init__(self, window: timedelta, scope: str | None = None) -> None:
        self.window = _positive(window, "window")
        self.scope = _scope(scope)

    def describe(self) -> str:
        return f"Cooldown({self.window})"

    def __repr__(self) -> str:
        return f"Cooldown({self.window!r}, scope={self.scope!r})"


class RateLimit(Scoped, Dependency):
    """At most ``limit`` starts per ``per`` (a sliding window) across every worker.

    A run over the limit is postponed to the first moment the window has room (or, with
    ``drop=True``, dropped and logged). Counted per task, or per value of the argument
    ``scope`` names. Several limits on one task must all have room.
    """

    def __init__(
        self, limit: int, per: timedelta, drop: bool = False, scope: str | None = None
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        self.limit = limit
        self.per = _positive(per, "per")
        if not isinstance(drop, bool):
            raise TypeError(f"drop must be True or False, not {drop!r}")
        self.drop = drop
        self.scope = _scope(scope)

    def describe(self) -> str:
        return f"RateLimit({self.limit} per {self.per})"

    def __repr__(self) -> str:
        return f"RateLimit({self.limit}, per={self.per!r}, drop={self.drop}, scope={self.scope!r})"


class Debounce(Scoped, Dependency):
    """Collapse submissions made within ``settle`` of each other into one run, ``settle``
    after the last one (a trailing debounce).

    ``keep="last"``: the run has the last submission's arguments (``"first"``: the
    first's). ``max_wait`` caps how long a steady stream of submissions can postpone the
    run, from the first submission of the burst. Per task, or per value of the argument
    ``scope`` names. The debounce chooses the run's key; ``add()`` returns the execution
    under that key.
    """

    single = True

    def __init__(
        self,
        settle: timedelta,
        max_wait: timedelta | None = None,
        keep: str = "last",
        scope: str | None = None,
    ) -> None:
        self.settle = _positive(settle, "settle")
        self.max_wait = None if max_wait is None else _positive(max_wait, "max_wait")
        if keep not in ("last", "first"):
            raise ValueError(f'keep must be "last" or "first", not {keep!r}')
        self.keep = keep
        self.scope = _scope(scope)

    def describe(self) -> str:
        return f"Debounce({self.settle})"

    def __repr__(self) -> str:
        return (
            f"Debounce({self.settle!r}, max_wait={self.max_wait!r}, keep={self.keep!r}, "
            f"scope={self.scope!r})"
        )
