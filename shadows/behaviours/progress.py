"""``Progress``: a running task reports how far it got, for anyone watching."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from shadows.behaviours.base import Context, Dependency
from shadows.core.execution import current_holder

if TYPE_CHECKING:
    from shadows.core.keys import Keys
    from shadows.core.link import Link


class _Reporter(Protocol):
    """What a report needs of the shadow (a ``Shadow``; typed apart: no import of it)."""

    @property
    def keys(self) -> Keys: ...

    def link(self) -> Link: ...


class Progress(Dependency):
    """Report progress from inside a task: ``progress: Progress = Progress()``.

    ``await progress.set_total(n)``, ``await progress.increment(by=1)`` and ``await
    progress.set_message(text)`` each write the run record (one short script: the call
    waits for Redis) and wake whoever watches the execution (``execution.subscribe()``,
    ``shadows watch KEY``); ``execution.progress`` reads it. Each call is a round trip,
    so report every item of a long loop only when items take a while: otherwise every
    hundredth. Only the run that holds the key writes (a run another worker has taken
    over writes nothing). The record keeps the last report until it expires.
    """

    single = True

    def __init__(self) -> None:
        self.current = 0
        self.total: int | None = None
        self.message: str | None = None
        self._shadow: _Reporter | None = None
        self._key = ""
        self._holder = ""
        #: The shard of the run's message, where its run record lives.
        self._shard = 0

    async def resolve(self, context: Context, parameter: str) -> Any:
        bound = Progress()
        bound._shadow = cast("_Reporter", context.shadow)
        bound._key = context.execution.key
        message = context.execution.message
        bound._holder = message.message_id if message is not None else ""
        holder = current_holder.get()
        if holder is not None and holder.key == bound._key:
            bound._shard = holder.shard
        return bound

    async def set_total(self, total: int) -> None:
        """The number of steps the task will take (``current`` counts towards it)."""
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ValueError(f"Progress total must be a non-negative int, not {total!r}")
        self.total = total
        await self._write("progress_total", "set", total)

    async def increment(self, by: int = 1) -> None:
        """Count ``by`` more steps done."""
        if not isinstance(by, int) or isinstance(by, bool):
            raise ValueError(f"Progress.increment takes an int, not {by!r}")
        self.current = int(await self._write("progress_current", "incr", by) or self.current + by)

    async def set_message(self, message: str) -> None:
        """A short text saying what the task does now."""
        if not isinstance(message, str):
            raise ValueError(f"Progress message must be a str, not {message!r}")
        self.message = message
        await self._write("progress_message", "set", message[:1000])

    async def _write(self, field: str, mode: str, value: str | int) -> Any:
        shadow = self._shadow
        if shadow is None:
            raise RuntimeError("Progress is only available inside a task run by a worker")
        keys = shadow.keys.of_shard(self._shard)
        return await shadow.link().state.progress(
            keys=[keys.run(self._key)],
            args=[self._holder, field, mode, value, keys.events(self._key)],
        )
