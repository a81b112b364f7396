"""``[task.NAME]`` tables turned into behaviours, and behaviours shown as tables.

A table's keys override the task's own behaviour of the same kind field by field: with
``@shadow.task(retry=Retry(attempts=3, delay=timedelta(seconds=10)))`` and
``retry = { attempts = 8 }``, the task retries 8 times, 10 s apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shadows.behaviours.base import Dependency, behaviour_kind, plan_for
from shadows.behaviours.concurrency import ConcurrencyLimit
from shadows.behaviours.flow import Cooldown, Debounce, RateLimit
from shadows.behaviours.perpetual import Cron, Perpetual
from shadows.behaviours.retry import ExponentialRetry, Retry
from shadows.behaviours.timeout import Timeout
from shadows.core.durations import format_duration
from shadows.settings.model import DebounceTable, TaskSettings

#: The kinds a ``[task.NAME]`` table may set, by the key that sets them.
KINDS: dict[str, type[Dependency]] = {
    "retry": Retry,
    "timeout": Timeout,
    "perpetual": Perpetual,
    "cron": Perpetual,
    "concurrency": ConcurrencyLimit,
    "cooldown": Cooldown,
    "rate_limit": RateLimit,
    "debounce": Debounce,
}


def declared(function: Callable[..., Any]) -> dict[type[Dependency], tuple[Dependency, str]]:
    """The task's behaviours by kind, with ``decorator`` or ``parameter`` for where."""
    plan = plan_for(getattr(function, "__shadows_function__", function))
    found: dict[type[Dependency], tuple[Dependency, str]] = {}
    for _, dependency in plan.dependencies:
        kind = behaviour_kind(type(dependency))
        if kind in KINDS.values():
            found.setdefault(kind, (dependency, "parameter"))
    for behaviour in getattr(function, "__shadows_behaviours__", ()):
        found[behaviour_kind(type(behaviour))] = (behaviour, "decorator")
    return found


def overridden(
    table: TaskSettings, own: dict[type[Dependency], tuple[Dependency, str]]
) -> dict[str, Dependency]:
    """The behaviours ``table`` sets, by table key, merged with the task's ``own``.
    Raises ``ValueError`` for a combination that cannot work."""
    if table.perpetual is not None and table.cron is not None:
        raise ValueError("set perpetual or cron, not both")
    result: dict[str, Dependency] = {}
    if table.retry is not None:
        base = own.get(Retry, (None, ""))[0]
        result["retry"] = _retry(table, base if isinstance(base, Retry) else None)
    if table.timeout is not None:
        result["timeout"] = Timeout(table.timeout)
    base_perpetual = own.get(Perpetual, (None, ""))[0]
    earlier = base_perpetual if isinstance(base_perpetual, Perpetual) else None
    if table.perpetual is not None:
        every = table.perpetual.every
        if every is None and earlier is not None and not isinstance(earlier, Cron):
            every = earlier.every
        if every is None:
            raise ValueError("perpetual needs every (the task declares no Perpetual to keep it)")
        automatic = _first(table.perpetual.automatic, getattr(earlier, "automatic", None), False)
        result["perpetual"] = Perpetual(every, automatic)
    if table.cron is not None:
        cron = table.cron
        zone: Any = earlier.tz if isinstance(earlier, Cron) else UTC
        if cron.tz is not None:
            try:
                zone = ZoneInfo(cron.tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"cron: unknown time zone {cron.tz!r}") from None
        automatic = _first(cron.automatic, getattr(earlier, "automatic", None), False)
        result["cron"] = Cron(cron.expression, automatic, zone)
    if table.concurrency is not None:
        limit = table.concurrency
        base = own.get(ConcurrencyLimit, (None, ""))[0]
        old = base if isinstance(base, ConcurrencyLimit) else None
        result["concurrency"] = ConcurrencyLimit(
            _first(limit.argument_name, getattr(old, "argument_name", None), None),
            _first(limit.max_concurrent, getattr(old, "max_concurrent", None), 1),
            _first(limit.scope, getattr(old, "scope", None), None),
        )
    if table.cooldown is not None:
        base = own.get(Cooldown, (None, ""))[0]
        cooled = base if isinstance(base, Cooldown) else None
        window = _first(table.cooldown.window, getattr(cooled, "window", None))
        if window is None:
            raise ValueError("cooldown needs window (the task declares no Cooldown to keep it)")
        scope = _first(table.cooldown.scope, getattr(cooled, "scope", None))
        result["cooldown"] = Cooldown(window, scope)
    if table.rate_limit is not None:
        rate = table.rate_limit
        base = own.get(RateLimit, (None, ""))[0]
        limited = base if isinstance(base, RateLimit) else None
        limit = _first(rate.limit, getattr(limited, "limit", None))
        per = _first(rate.per, getattr(limited, "per", None))
        if limit is None or per is None:
            raise ValueError(
                "rate_limit needs limit and per (the task declares no RateLimit to keep them)"
            )
        result["rate_limit"] = RateLimit(
            limit,
            per,
            _first(rate.drop, getattr(limited, "drop", None), False),
            _first(rate.scope, getattr(limited, "scope", None)),
        )
    if table.debounce is not None:
        base = own.get(Debounce, (None, ""))[0]
        result["debounce"] = debounce_from(table.debounce, base)
    return result


def debounce_from(table: DebounceTable, own: Dependency | None) -> Debounce:
    """``table`` over the task's own ``Debounce`` (if any), field by field. Raises
    ``ValueError`` when there is no settle to use."""
    base = own if isinstance(own, Debounce) else None
    settle = _first(table.settle, getattr(base, "settle", None))
    if settle is None:
        raise ValueError("debounce needs settle (the task declares no Debounce to keep it)")
    return Debounce(
        settle,
        _first(table.max_wait, getattr(base, "max_wait", None)),
        _first(table.keep, getattr(base, "keep", None), "last"),
        _first(table.scope, getattr(base, "scope", None)),
    )


def _retry(table: TaskSettings, base: Retry | None) -> Retry:
    assert table.retry is not None
    spec = table.retry
    attempts: int | None = base.attempts if base is not None else 1
    if spec.attempts is not None:
        attempts = None if spec.attempts == "forever" else spec.attempts
    exponential = spec.minimum_delay is not None or spec.maximum_delay is not None
    if exponential or (spec.delay is None and isinstance(base, ExponentialRetry)):
        old = base if isinstance(base, ExponentialRetry) else None
        return ExponentialRetry(
            attempts,
            _first(spec.minimum_delay, getattr(old, "minimum_delay", None), timedelta(seconds=1)),
            _first(spec.maximum_delay, getattr(old, "maximum_delay", None), timedelta(seconds=64)),
        )
    delay = spec.delay if spec.delay is not None else (base.delay if base is not None else None)
    return Retry(attempts, delay or timedelta(0))


def _first(*values: Any) -> Any:
    """The first value that is not ``None``: the table's, the task's own, the default."""
    return next((value for value in values if value is not None), None)


def as_table(behaviour: Dependency) -> tuple[str, Any]:
    """The table key and value that would declare ``behaviour`` (for ``config show``)."""
    if isinstance(behaviour, ExponentialRetry):
        return "retry", {
            "attempts": behaviour.attempts if behaviour.attempts is not None else "forever",
            "minimum_delay": format_duration(behaviour.minimum_delay),
            "maximum_delay": format_duration(behaviour.maximum_delay),
        }
    if isinstance(behaviour, Retry):
        return "retry", {
            "attempts": behaviour.attempts if behaviour.attempts is not None else "forever",
            "delay": format_duration(behaviour.delay),
        }
    if isinstance(behaviour, Timeout):
        return "timeout", format_duration(behaviour.base)
    if isinstance(behaviour, Cron):
        return "cron", {
            "expression": behaviour.expression,
            "automatic": behaviour.automatic,
            "tz": str(behaviour.tz),
        }
    if isinstance(behaviour, Perpetual):
        return "perpetual", {
            "every": format_duration(behaviour.every),
            "automatic": behaviour.automatic,
        }
    if isinstance(behaviour, ConcurrencyLimit):
        return "concurrency", {
            "max_concurrent": behaviour.max_concurrent,
            "argument_name": behaviour.argument_name,
            "scope": behaviour.scope,
        }
    if isinstance(behaviour, Cooldown):
        return "cooldown", {"window": format_duration(behaviour.window), "scope": behaviour.scope}
    if isinstance(behaviour, RateLimit):
        return "rate_limit", {
            "limit": behaviour.limit,
            "per": format_duration(behaviour.per),
            "drop": behaviour.drop,
            "scope": behaviour.scope,
        }
    if isinstance(behaviour, Debounce):
        return "debounce", {
            "settle": format_duration(behaviour.settle),
            "max_wait": None if behaviour.max_wait is None else format_duration(behaviour.max_wait),
            "keep": behaviour.keep,
            "scope": behaviour.scope,
        }
    return type(behaviour).__name__, behaviour.describe()
