"""One scheduled call of a task (its wire form, :class:`Message`, is in :mod:`message`,
re-exported here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shadows.core.annotations import render_call
from shadows.core.functions import task_name
from shadows.core.message import MALFORMED as MALFORMED
from shadows.core.message import POISON as POISON
from shadows.core.message import Fields as Fields
from shadows.core.message import Message as Message
from shadows.core.message import MessageError as MessageError
from shadows.core.message import from_ms as from_ms
from shadows.core.message import now_ms as now_ms
from shadows.core.message import preview as preview
from shadows.core.message import to_ms as to_ms
from shadows.core.serialization import Payloads
from shadows.core.state import (
    ExecutionEvent,
    ExecutionProgress,
    ExecutionState,
    RunRecord,
    Source,
    read_record,
    result_of,
    watch,
)

#: The progress of a run that reported none (immutable, so one serves every execution).
NO_PROGRESS = ExecutionProgress()


class Execution:
    """One call of a task: what runs, with which arguments, when, under which key.

    ``attempt`` counts from 1 and grows with each retry of the same key. An execution
    returned by ``add()``, ``schedule()`` or ``shadow.get_execution()`` is bound to its
    shadow: ``state``, ``started_at``, ``finished_at``, ``error``, ``worker`` and
    ``progress`` are as last read (:meth:`refresh` reads them again), :meth:`get_result`
    waits for its outcome and :meth:`subscribe` streams its changes.
    """

    __slots__ = (
        "_name", "args", "attempt", "error", "finished_at", "function", "key", "kwargs",
        "message", "progress", "shadow", "started_at", "state", "when", "worker",
    )  # fmt: skip

    def __init__(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        when: datetime,
        key: str,
        attempt: int = 1,
        message: Message | None = None,
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.when = when
        self.key = key
        self.attempt = attempt
        self.message = message
        #: The shadow it was scheduled on or read from (``None``: not bound to one).
        self.shadow: Source | None = None
        self.state: ExecutionState | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        #: ``"Type: message"`` of the exception of a failed run.
        self.error: str | None = None
        #: The worker that runs or ran it.
        self.worker: str | None = None
        self.progress = NO_PROGRESS
        self._name: str | None = None

    def bind(self, shadow: Source, record: RunRecord | None = None) -> Execution:
        """Attach ``shadow`` (and what ``record`` says of the run); returns self."""
        self.shadow = shadow
        if record is not None:
            self.state = record.state
            self.attempt = record.attempt
            self.started_at, self.finished_at = record.started_at, record.finished_at
            self.error, self.worker, self.progress = record.error, record.worker, record.progress
        return self

    def _bound(self) -> Source:
        if self.shadow is None:
            raise RuntimeError(
                f"{self!r} is not bound to a shadow: use the execution add() or "
                "shadow.get_execution() returns"
            )
        return self.shadow

    async def refresh(self) -> Execution:
        """Read the state again; ``state`` is ``None`` once the record is gone (never
        added, or ended longer than ``execution_ttl`` ago)."""
        record = await read_record(self._bound(), self.key)
        if record is None:
            self.state = None
            return self
        return self.bind(self._bound(), record)

    async def get_result(self, timeout: float | timedelta | None = None) -> Any:
        """Wait for the run to end (at most ``timeout``) and return the task's return
        value; raise the task's exception (its type when importable here, else
        :class:`~shadows.RemoteError`) for a failed run,
        :class:`~shadows.ExecutionCancelled` for a cancelled one, ``TimeoutError`` when
        the time is up, ``LookupError`` when there is no such execution."""
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        return await result_of(self._bound(), self.key, seconds)

    async def subscribe(self) -> AsyncIterator[ExecutionEvent]:
        """The state and progress changes of this execution until it ends: the current
        state first, then each change (see :mod:`shadows.core.state`)."""
        async for event in watch(self._bound(), self.key):
            self.state, self.progress = event.state, event.progress
            yield event

    @property
    def function_name(self) -> str:
        if self._name is None:
            self._name = task_name(self.function)
        return self._name

    def call_repr(self) -> str:
        return render_call(self.function, self.args, self.kwargs)

    def to_message(self, payloads: Payloads, extra: dict[str, str] | None = None) -> Message:
        """The sealed (codec-named, signed if configured) message for this call."""
        args, kwargs = payloads.encode(self.args, self.kwargs)
        message = Message(
            key=self.key,
            function=self.function_name,
            when_ms=to_ms(self.when),
            attempt=self.attempt,
            args=args,
            kwargs=kwargs,
            extra=dict(extra or {}),
        )
        return payloads.seal(message)

    @classmethod
    def from_message(
        cls, message: Message, function: Callable[..., Any], payloads: Payloads
    ) -> Execution:
        """Check ``message`` for running (codec, signature, age) and decode it; raises
        PayloadError, or whatever the codec raises."""
        args, kwargs = payloads.decode(message, fresh=True)
        return cls(
            function, args, kwargs, from_ms(message.when_ms), message.key, message.attempt, message
        )

    def __repr__(self) -> str:
        return (
            f"Execution({self.function_name}, key={self.key!r}, "
            f"when={self.when.isoformat()}, attempt={self.attempt})"
        )


@dataclass(frozen=True, slots=True)
class Holder:
    """The run that holds a key while a worker runs it: it alone may schedule the key's
    successor (see ``docs/advanced-patterns.md``, "Chains")."""

    shadow: str
    key: str
    message_id: str
    #: The shard the run's message came from: its successor goes there too.
    shard: int = 0


#: The run the current code belongs to (set by the worker around a task and its
#: dependencies; asyncio tasks and threads started from there inherit it).
current_holder: ContextVar[Holder | None] = ContextVar("shadows_holder", default=None)
