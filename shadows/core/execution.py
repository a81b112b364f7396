"""One scheduled call of a task, and its form on the wire."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shadows.core.annotations import render_call
from shadows.core.functions import task_name
from shadows.core.serialization import Payloads

Fields = Mapping[bytes, bytes]


class MessageError(ValueError):
    """A stream entry that is not a well-formed task message."""


#: Marks (in ``Message.extra``) the stand-in for an entry that could not be parsed.
MALFORMED = "malformed"
#: Marks (in ``Message.extra``, worker-side) a message delivered too often to run again.
POISON = "poison"


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def now_ms() -> int:
    return to_ms(datetime.now(UTC))


@dataclass(slots=True)
class Message:
    """A task message as read from Redis, before its arguments are decoded.

    Splitting this from :class:`Execution` lets a worker name the task and key of a
    message whose arguments cannot be decoded.
    """

    key: str
    function: str
    when_ms: int
    attempt: int
    args: bytes
    kwargs: bytes
    message_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: Concurrency slots this delivery holds while it runs (worker-side, not on the wire).
    holds: list[str] = field(default_factory=list)
    #: The raw fields of an entry that could not be parsed (worker-side).
    raw: list[str | bytes] | None = None

    @classmethod
    def parse(cls, fields: Fields, message_id: str = "") -> Message:
        """Read a stream entry; raises :class:`MessageError` when it is not one of ours."""
        try:
            key = fields[b"key"].decode()
            function = fields[b"function"].decode()
            when_ms = int(fields[b"when"])
            attempt = int(fields[b"attempt"])
            args = fields[b"args"]
            kwargs = fields[b"kwargs"]
        except KeyError as missing:
            name = missing.args[0]
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            raise MessageError(f"missing field {name!r}") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise MessageError(f"malformed field: {error}") from None
        known = {b"key", b"function", b"when", b"attempt", b"args", b"kwargs"}
        extra = {
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in fields.items()
            if k not in known
        }
        return cls(key, function, when_ms, attempt, args, kwargs, message_id, extra)

    @classmethod
    def malformed(cls, message_id: str, fields: Fields, error: MessageError) -> Message:
        """A stand-in for an entry too broken to parse, run only to dead-letter it."""
        raw: list[str | bytes] = [part for pair in fields.items() for part in pair]
        return cls(
            key=f"malformed-{message_id}",
            function="",
            when_ms=0,
            attempt=0,
            args=b"",
            kwargs=b"",
            message_id=message_id,
            extra={MALFORMED: str(error)},
            raw=raw,
        )

    def fields(self) -> list[str | bytes]:
        """Flat name/value pairs, the form the Lua scripts store and XADD."""
        pairs: list[str | bytes] = [
            "key", self.key,
            "function", self.function,
            "when", str(self.when_ms),
            "attempt", str(self.attempt),
            "args", self.args,
            "kwargs", self.kwargs,
        ]  # fmt: skip
        for name, value in self.extra.items():
            pairs += [name, value]
        return pairs


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


def preview(fields: Fields) -> dict[str, str]:
    """A short, printable view of a stream entry's first fields, for logs."""
    return {
        _printable(name)[:40]: _printable(value)[:60] for name, value in list(fields.items())[:8]
    }


def _printable(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
