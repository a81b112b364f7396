"""Caps on how often named tasks or keys run, for :meth:`Worker.run_at_most`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shadows.core.execution import Message
from shadows.core.functions import task_name


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
