"""Caps on how often named tasks or keys run, for :meth:`Worker.run_at_most`, and the
check that ends ``run_until_finished``: nothing left to run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shadows.core.backend import Backend
from shadows.core.execution import Message
from shadows.core.functions import task_name
from shadows.worker.shard_reader import entry_id


class RunCaps:
    """Counts runs by task key or task name against caps; empty means uncapped."""

    def __init__(self) -> None:
        self._limits: dict[str, int] = {}
        self._counts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._limits)

    def set(self, limits: Mapping[str, int] | Mapping[str | Callable[..., Any], int]) -> None:
        """Caps by key or task name; a task (a function or handle) stands for its name."""
        self._limits = {
            name if isinstance(name, str) else task_name(name): cap for name, cap in limits.items()
        }
        self._counts = {}

    def clear(self) -> None:
        self._limits = {}

    def allow(self, message: Message) -> bool:
        """Count a run of ``message``; ``False`` once its key's or task's cap is spent."""
        for name in (message.key, message.function):
            if name in self._limits:
                done = self._counts.get(name, 0)
                if done >= self._limits[name]:
                    return False
                self._counts[name] = done + 1
                return True
        return True

    def spent(self, name: str) -> bool:
        return name in self._limits and self._counts.get(name, 0) >= self._limits[name]


async def nothing_left(shards: list[Backend], caps: RunCaps) -> bool:
    """Nothing ready, running or scheduled on any of ``shards``, each in one consistent
    look (a script: work moves between the queue and the stream meanwhile); under
    ``caps``, the future runs of capped tasks do not count."""
    for shadow in shards:
        if not await _nothing_left(shadow, caps):
            return False
    return True


async def _nothing_left(shadow: Backend, caps: RunCaps) -> bool:
    keys = shadow.keys
    while True:  # the queued keys first: the script declares their run keys
        names: list[str] = []
        if caps:
            queued: list[Any] = await shadow.client.zrange(keys.queue, 0, -1)
            names = [entry_id(key) for key in queued]
        ready, *rest = await shadow.scripts.pending_work(
            keys=[keys.stream, keys.queue, *(keys.run(name) for name in names)],
            args=[1 if caps else 0, *names],
        )
        if int(ready) >= 0:
            waiting = rest[0]
            break
    if not int(ready) and not waiting:
        return True
    if not caps or int(ready):
        return False
    # Under run_at_most, future runs of capped tasks (perpetual chains) do not count.
    return all(
        caps.spent(entry_id(key)) or caps.spent(entry_id(function))
        for key, function in zip(waiting[::2], waiting[1::2], strict=True)
    )
