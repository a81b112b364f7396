"""A task message's form on the wire: the stream entry's fields, before its arguments are
decoded (below both :mod:`serialization`, which signs it, and :mod:`execution`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
    #: The shard whose stream delivered it (worker-side: its claim, acknowledgement and
    #: follow-ups belong to that shard's keys).
    shard: int = 0

    @property
    def ref(self) -> str:
        """The worker's name for this delivery: stream ids are unique per stream only, so
        a message of shard ``i > 0`` is ``id@i`` (shard 0 keeps the bare id)."""
        return ref_of(self.shard, self.message_id)

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
        # the six fields above are all there: any other is an extra (a trace context, a
        # signature, a codec's name)
        extra = (
            {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in fields.items()
                if k not in _KNOWN
            }
            if len(fields) > len(_KNOWN)
            else {}
        )
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


_KNOWN = frozenset({b"key", b"function", b"when", b"attempt", b"args", b"kwargs"})


def ref_of(shard: int, message_id: str) -> str:
    """See :attr:`Message.ref`."""
    return message_id if shard == 0 else f"{message_id}@{shard}"


def split_ref(ref: str) -> tuple[int, str]:
    """``(shard, message id)`` of a :attr:`Message.ref`."""
    message_id, _, shard = ref.partition("@")
    return (int(shard) if shard else 0), message_id


def preview(fields: Fields) -> dict[str, str]:
    """A short, printable view of a stream entry's first fields, for logs."""
    return {
        _printable(name)[:40]: _printable(value)[:60] for name, value in list(fields.items())[:8]
    }


def _printable(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
