"""Adding many tasks at once: collected locally, written in pipelines."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, overload

from .execution import Execution, Message
from .instrumentation import producing

if TYPE_CHECKING:
    from .shadow import Shadow

P = ParamSpec("P")


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
        for start in range(0, len(messages), self.size):
            chunk = messages[start : start + self.size]
            async with self.shadow.client.pipeline(transaction=False) as pipe:
                for message in chunk:
                    await self.shadow.schedule_message(message, client=pipe)
                replies = await pipe.execute()
            outcomes += [
                self.shadow.scheduled(message, reply)
                for message, reply in zip(chunk, replies, strict=True)
            ]
        self.outcomes += outcomes
        return outcomes

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
