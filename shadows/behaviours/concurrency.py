"""``ConcurrencyLimit``: at most N runs at once per argument value, across all workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from shadows.behaviours.base import Context, Dependency, argument_bucket


class ConcurrencyLimit(Dependency):
    """Allow at most ``max_concurrent`` runs at once that share a value of ``argument_name``.

    Enforced in Redis across every worker: a run takes a slot atomically before its body
    starts and gives it back atomically with its acknowledgement. A run that finds no free
    slot does not hold a worker slot or poll: it goes back to the queue and is woken the
    moment a slot frees (or, should the holder's worker die, when its lease runs out after
    the redelivery timeout). Without ``argument_name`` the limit counts all runs of the
    task. ``scope`` names a pool shared between tasks (by default each task has its own).
    Several limits on one task must all have a free slot.
    """

    needs_home: ClassVar[bool] = True  # its pool is global: the task lives in the home shard

    def __init__(
        self,
        argument_name: str | None = None,
        max_concurrent: int = 1,
        scope: str | None = None,
    ) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ValueError(f"max_concurrent must be a positive integer, not {max_concurrent!r}")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise ValueError("scope must be a non-empty string")
        self.argument_name = argument_name
        self.max_concurrent = max_concurrent
        self.scope = scope

    async def resolve(self, context: Context, parameter: str) -> Any:
        return self

    def slot(self, task_name: str, arguments: Mapping[str, Any]) -> str:
        """The name of the slot pool a run with these ``arguments`` draws from."""
        pool = self.scope or task_name
        if self.argument_name is None:
            return pool
        owner = f"ConcurrencyLimit on {self.argument_name!r}"
        return argument_bucket(pool, self.argument_name, arguments, owner)

    def describe(self) -> str:
        return f"ConcurrencyLimit({self.argument_name!r}, max_concurrent={self.max_concurrent})"

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit({self.argument_name!r}, max_concurrent={self.max_concurrent}, "
            f"scope={self.scope!r})"
        )
