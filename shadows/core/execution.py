"""One scheduled call of a task (its wire form, :class:`Message`, is in :mod:`message`,
re-exported here)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
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


class Execution:
    """One call of a task: what runs, with which arguments, when, under which key.

    ``attempt`` counts from 1 and grows with each retry of the same key.
    """

    __slots__ = ("args", "attempt", "function", "key", "kwargs", "message", "when")

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

    @property
    def function_name(self) -> str:
        return task_name(self.function)

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


#: The run the current code belongs to (set by the worker around a task and its
#: dependencies; asyncio tasks and threads started from there inherit it).
current_holder: ContextVar[Holder | None] = ContextVar("shadows_holder", default=None)
