"""The dead-letter list, a page at a time, newest first, without the tracebacks (those are
on each task's page): two round trips whatever the number of dead letters, merging the
dead letters of every shard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shadows.core.execution import now_ms
from shadows.core.keys import Keys
from shadows.core.layout import every_shard
from shadows.operations.dead_letters import MESSAGE_PREFIX

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: The part of an error a list row shows.
ERROR_PREVIEW = 300

_FIELDS = ["reason", "error", "worker", "failed_at", f"{MESSAGE_PREFIX}function"]
_FIELDS.append(f"{MESSAGE_PREFIX}attempt")


@dataclass(frozen=True, slots=True)
class FailedRow:
    key: str
    function: str
    attempt: int
    failed_ms: int
    reason: str
    error: str
    worker: str


@dataclass(frozen=True, slots=True)
class FailedPage:
    rows: list[FailedRow]
    total: int
    start: int


async def failed_page(shadow: Shadow, start: int = 0, size: int = 50) -> FailedPage:
    client = shadow.client
    start = max(0, start)
    # Entries past dead_letter_ttl are left out here (listing with the API prunes them).
    cutoff = now_ms() - int(shadow.dead_letter_ttl.total_seconds() * 1000)
    # Every shard's newest start + size, merged: the page is a slice of that.
    shards = await every_shard(shadow)
    async with client.pipeline(transaction=False) as pipe:
        for keys in shards:
            pipe.zcount(keys.failed, cutoff, "+inf")
            pipe.zrevrangebyscore(
                keys.failed, "+inf", cutoff, start=0, num=start + size, withscores=True
            )
        replies = await pipe.execute()
    total = sum(int(count) for count in replies[0::2])
    merged: list[tuple[float, str, Keys]] = []
    for keys, newest in zip(shards, replies[1::2], strict=True):
        merged += [(float(score), _text(name), keys) for name, score in newest]
    merged.sort(key=lambda item: -item[0])
    page = merged[start : start + size]
    keys_read = [name for _, name, _ in page]
    async with client.pipeline(transaction=False) as pipe:
        for _, key, keys in page:
            pipe.hmget(keys.dead(key), _FIELDS)
        details = await pipe.execute()
    rows = []
    for key, values in zip(keys_read, details, strict=True):
        reason, error, worker, failed_at, function, attempt = (_text(v) for v in values)
        if not failed_at:
            continue  # expired between the two reads
        rows.append(
            FailedRow(
                key=key,
                function=function or "?",
                attempt=_int(attempt),
                failed_ms=_int(failed_at),
                reason=reason,
                error=error.strip().splitlines()[0][:ERROR_PREVIEW] if error.strip() else "",
                worker=worker,
            )
        )
    return FailedPage(rows, int(total), start)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(value: str) -> int:
    try:
        return int(float(value)) if value else 0
    except ValueError:
        return 0
