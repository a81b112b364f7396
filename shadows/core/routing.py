"""Which shard holds a task (issue 14): the one rule producers, workers and operations share.

A task lives in ``shard_of(key, shards)``, except a task whose behaviours join global keys
(a concurrency pool, a cooldown, a rate-limit window, a debounce burst: all under the home
prefix) with its message in one script: such a task lives in the home shard 0, so that
every script still touches one cluster slot. Routing by key keeps idempotency,
``replace`` and ``cancel`` exact per key. While the shard count changes (several counts
recorded in the layout, see :mod:`shadows.core.layout`), a key may still live in its shard
under an older count: :func:`candidate_shards` names every place to look, a handful of
keys, never a scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from shadows.core.keys import shard_of


class Routed(Protocol):
    """A task's plan as routing sees it (``behaviours.base.TaskPlan``)."""

    @property
    def needs_home(self) -> bool: ...


class Sharded(Protocol):
    """Anything that knows its shard count (a ``Shadow``)."""

    @property
    def shards(self) -> int: ...


def needs_home(plan: Routed | bool | None) -> bool:
    """Whether a task with ``plan`` must live in the home shard (``None``: not known
    here, treated as a plain task)."""
    if plan is None:
        return False
    if isinstance(plan, bool):
        return plan
    return plan.needs_home


def shard_for(shards: int | Sharded, key: str, plan: Routed | bool | None = None) -> int:
    """The shard the task ``key`` (with ``plan``, or ``True`` for "needs home") lives in
    under ``shards`` shards."""
    count = shards if isinstance(shards, int) else shards.shards
    if count <= 1 or needs_home(plan):
        return 0
    return shard_of(key, count)


def candidate_shards(key: str, layouts: Iterable[int], home: bool = True) -> tuple[int, ...]:
    """Every shard the task ``key`` may live in, best guess first: its shard under each
    shard count in ``layouts`` (give the current one first), then the home shard (where
    a task routed home lives, whatever the count) unless ``home`` is false. No repeats."""
    found: list[int] = []
    for count in layouts:
        shard = shard_of(key, count)
        if shard not in found:
            found.append(shard)
    if home and 0 not in found:
        found.append(0)
    return tuple(found)


def all_shards(layouts: Iterable[int]) -> range:
    """The shards that may hold work under the recorded ``layouts``: 0 .. max(N) - 1."""
    return range(max((n for n in layouts if n >= 1), default=1))
