"""Dead letters: tasks that failed for good, kept for the operator.

A run that fails with no retry left, a message that cannot be decoded, refers to a task
this worker does not know, is refused (codec, signature) or is malformed, is acknowledged
so that it never blocks the queue, and kept here with its error and traceback: listable,
inspectable, re-enqueueable and purgeable. The store is bounded (at most
``dead_letter_limit`` entries, the oldest dropped first) and every entry expires after
``dead_letter_ttl``.

Re-enqueueing signs the message again, so on a shadow with a signing key it is done only
for letters whose own signature verifies: anything else (refused as unsigned or forged,
or written straight into Redis) would come out validly signed, so it takes an explicit
``force_unverified``, and is logged.

Layout: each shard keeps the dead letters of its own tasks (listing merges them, a key's
letter is looked for in its shard under each recorded count and in the home shard):
``{name}:failed`` is a sorted set of keys scored by failure time (ms);
``{name}:dead:{key}`` is a hash with the failure (reason, error, traceback, worker, time)
and the message's own fields under ``m.`` names, enough to enqueue it again.
"""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shadows.core.execution import Message, MessageError, from_ms, now_ms
from shadows.core.keys import Keys
from shadows.core.layout import every_shard, key_shards
from shadows.core.serialization import CODEC_FIELD, PayloadError

if TYPE_CHECKING:
    from shadows.core.backend import Backend

logger = logging.getLogger("shadows.dead_letters")

#: Prefix of the message fields inside a dead-letter hash.
MESSAGE_PREFIX = "m."
#: Longest error and traceback text kept per dead letter.
TEXT_LIMIT = 16_000


class UnverifiedLetterError(PayloadError):
    """A dead letter whose signature does not verify, which a retry would sign."""


@dataclass
class Failure:
    """Why a message is dead-lettered, as the worker saw it."""

    reason: str  # failed | unknown-task | undecodable | rejected | malformed | poison | internal
    error: str
    traceback: str = ""
    #: The entry's raw fields, for a message too malformed to parse.
    raw: list[str | bytes] | None = None

    @classmethod
    def from_exception(cls, reason: str, error: BaseException) -> Failure:
        text = "".join(tb.format_exception(type(error), error, error.__traceback__))
        return cls(reason, f"{type(error).__name__}: {error}", text)

    def fields(self, worker: str, message_fields: list[str | bytes]) -> list[str | bytes]:
        """Flat name/value pairs for the dead-letter hash."""
        pairs: list[str | bytes] = [
            "reason", self.reason,
            "error", self.error[:TEXT_LIMIT],
            "traceback", self.traceback[-TEXT_LIMIT:],
            "worker", worker,
            "failed_at", str(now_ms()),
        ]  # fmt: skip
        source = self.raw if self.raw is not None else message_fields
        for i in range(0, len(source) - 1, 2):
            name = source[i]
            name = name.decode(errors="replace") if isinstance(name, bytes) else name
            pairs += [f"{MESSAGE_PREFIX}{name}", source[i + 1]]
        return pairs


@dataclass
class DeadLetter:
    """One dead-lettered task, as listed by :meth:`Shadow.failed`."""

    key: str
    function: str
    attempt: int
    failed_at: datetime
    reason: str
    error: str
    traceback: str
    worker: str
    fields: dict[str, bytes] = field(repr=False, default_factory=dict)

    def message(self) -> Message:
        """The original message (raises MessageError when it was malformed)."""
        return Message.parse({k.encode(): v for k, v in self.fields.items()})


def _names(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else ""


def parse(key: str, raw: dict[bytes, bytes]) -> DeadLetter | None:
    if not raw:
        return None
    fields = {
        k.decode()[len(MESSAGE_PREFIX) :]: v
        for k, v in raw.items()
        if k.startswith(MESSAGE_PREFIX.encode())
    }
    try:
        attempt = int(fields.get("attempt", b"1"))
    except ValueError:
        attempt = 1
    return DeadLetter(
        key=key,
        function=_text(fields.get("function")) or "?",
        attempt=attempt,
        failed_at=from_ms(int(raw.get(b"failed_at", b"0") or 0)),
        reason=_text(raw.get(b"reason")),
        error=_text(raw.get(b"error")),
        traceback=_text(raw.get(b"traceback")),
        worker=_text(raw.get(b"worker")),
        fields=fields,
    )


async def list_failed(shadow: Backend, limit: int = 1000) -> list[DeadLetter]:
    """The newest ``limit`` dead letters of every shard, newest first."""
    client = shadow.client
    # Only reads (a read-only user may list them): expired entries are left out here and
    # dropped from the index by the worker that adds the next dead letter (COMPLETE).
    cutoff = now_ms() - int(shadow.dead_letter_ttl.total_seconds() * 1000)
    found: list[tuple[float, str, Keys]] = []
    for keys in await every_shard(shadow):
        newest: list[Any] = await client.zrevrangebyscore(
            keys.failed, "+inf", cutoff, start=0, num=max(1, limit), withscores=True
        )
        found += [(float(pair[1]), _names([pair[0]])[0], keys) for pair in newest]
    found.sort(key=lambda item: -item[0])
    found = found[: max(1, limit)]
    async with client.pipeline(transaction=False) as pipe:
        for _, name, keys in found:
            pipe.hgetall(keys.dead(name))
        raws = await pipe.execute()
    letters = [parse(name, raw) for (_, name, _), raw in zip(found, raws, strict=True)]
    return [letter for letter in letters if letter is not None]


async def _find(shadow: Backend, key: str) -> tuple[Keys, dict[bytes, bytes]]:
    """The shard holding the dead letter of ``key`` (its shard under each recorded count,
    or the home shard) and the letter's raw hash (empty if there is none)."""
    places = await key_shards(shadow, key)
    for keys in places:
        raw: dict[bytes, bytes] = await shadow.client.hgetall(keys.dead(key))  # type: ignore[assignment]
        if raw:
            return keys, raw
    return places[0], {}


async def get_failed(shadow: Backend, key: str) -> DeadLetter | None:
    _, raw = await _find(shadow, key)
    return parse(key, raw)


async def retry_failed(
    shadow: Backend,
    key: str,
    schedule: Callable[[Message], Awaitable[str]],
    force_unverified: bool = False,
) -> str:
    """Enqueue the dead letter ``key`` again, now, from attempt 1.

    ``schedule`` writes the message (the producer's ``schedule_message``). Returns the
    scheduling outcome (``queued``, or ``exists`` when a task with that key
    is already scheduled, queued or running). Raises ``KeyError`` if there is no such
    dead letter, ``MessageError`` if it was malformed, ``ValueError`` if it is in another
    codec, and :class:`UnverifiedLetterError` if the shadow signs messages and this one's
    signature does not verify, unless ``force_unverified`` (then it is logged).
    """
    keys, raw = await _find(shadow, key)
    letter = parse(key, raw)
    if letter is None:
        raise KeyError(f"no failed task with key {key!r}")
    message = letter.message()
    codec = message.extra.get(CODEC_FIELD, "pickle")
    if codec != shadow.payloads.codec.name:
        raise ValueError(
            f"the failed task {key!r} was encoded with the {codec} codec: retry it from a "
            f"Shadow that uses that codec (this one uses {shadow.payloads.codec.name})"
        )
    try:
        shadow.payloads.check(message)  # signed for this shadow (its age does not matter)
    except PayloadError as error:
        if not force_unverified:
            raise UnverifiedLetterError(
                f"the failed task {key!r} has no valid signature ({error}): retrying it "
                "would sign whatever was written to Redis; retry it with force_unverified "
                "(--force-unverified) only if you trust its contents"
            ) from None
        logger.warning(
            "Re-signing the failed task %s [key=%s] although its signature does not "
            "verify (%s), as asked (force_unverified)",
            letter.function,
            key,
            error,
        )
    message.attempt = 1
    message.when_ms = now_ms()
    shadow.payloads.seal(message)
    outcome = await schedule(message)
    if outcome != "exists":
        await _purge_one(shadow, keys, key)
    return outcome


async def purge_failed(shadow: Backend, key: str | None = None) -> int:
    """Forget one dead letter, or all of them (of every shard); returns how many."""
    if key is not None:
        keys, _ = await _find(shadow, key)
        return await _purge_one(shadow, keys, key)
    total = 0
    for keys in await every_shard(shadow):
        while True:
            names = _names(await shadow.client.zrange(keys.failed, 0, 499))
            if not names:
                break
            async with shadow.client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.failed, *names)
                pipe.delete(*(keys.dead(name) for name in names))
                removed, _ = await pipe.execute()
            total += int(removed)
    return total


async def _purge_one(shadow: Backend, keys: Keys, key: str) -> int:
    async with shadow.client.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.failed, key)
        pipe.delete(keys.dead(key))
        removed, _ = await pipe.execute()
    return int(removed)


__all__ = [
    "DeadLetter",
    "Failure",
    "MessageError",
    "UnverifiedLetterError",
    "get_failed",
    "list_failed",
    "purge_failed",
    "retry_failed",
]
