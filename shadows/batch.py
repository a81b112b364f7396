"""Adding many tasks at once: collected locally, written in pipelines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, overload

from .execution import Execution, Message
from .instrumentation import producing
from .scripts import outcome_pairs

if TYPE_CHECKING:
    from .shadow import Shadow

P = ParamSpec("P")

#: Tasks per script call: one call costs Redis more than the writes of an add, yet a
#: call must stay short, for Redis serves no one else while a script runs.
PER_CALL = 100


class Batch:
    """The adds of one ``async with shadows.batch()`` block (see :meth:`Shadow.batch`)."""

    def __init__(self, shadow: Shadow, size: int = 1000) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, not {size!r}")
        self.shadow = shadow
        self.size = size
        self._messages: list[Message] = []
        #: ``queued``, ``scheduled`` or ``exists`` for each add, once the batch is sent.
        self.outcomes: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def add(
        self, function: Callable[P, Any], when: datetime | None = None, key: str | None = None
    ) -> Callable[P, Execution]: ...

    @overload
    def add(
        self, function: str, when: datetime | None = None, key: str | None = None
    ) -> Callable[..., Execution]: ...

    def add(
        self,
        function: Callable[P, Any] | str,
        when: datetime | None = None,
        key: str | None = None,
    ) -> Callable[P, Execution] | Callable[..., Execution]:
        """Like :meth:`Shadow.add`, but the call only checks and encodes the task; it is
        written when the batch is sent."""
        call = self.shadow.caller(function, when, key)

        def collect(*args: Any, **kwargs: Any) -> Execution:
            execution = call(*args, **kwargs)
            with producing(self.shadow.name, execution, "add") as context:
                self._messages.append(execution.to_message(self.shadow.payloads, extra=context))
            return execution

        return collect

    async def send(self) -> list[str]:
        """Write what was added since the last send; returns their outcomes."""
        messages, self._messages = self._messages, []
        outcomes: list[str] = []
        for at in range(0, len(messages), self.size):
            outcomes += await self._send(messages[at : at + self.size])
        self.outcomes += outcomes
        return outcomes

    async def _send(self, chunk: list[Message]) -> list[str]:
        async with self.shadow.client.pipeline(transaction=False) as pipe:
            for first in range(0, len(chunk), PER_CALL):
                await self.shadow.add_messages(chunk[first : first + PER_CALL], pipe)
            replies = await pipe.execute()
        raw = [pair for reply in replies for pair in outcome_pairs(reply)]
        return [
            self.shadow.scheduled(message, outcome)
            for message, outcome in zip(chunk, raw, strict=True)
        ]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.send()
        else:
            self._messages = []
