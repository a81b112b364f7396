"""What each shard of a shadow holds, and forgetting an old shard count (issue 14).

``shadows shards`` reads the layout record (:mod:`shadows.core.layout`) and, for every
shard that may hold work, its stream length, the messages workers hold (pending), the
scheduled tasks and the dead letters. ``shadows shards forget N`` removes a count once
nothing needs it: no process announced it lately, the shards only it reads are empty,
and no live task it placed in a shard it shares with the other counts sits under a key
they route elsewhere (see :func:`stranded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shadows.core.keys import WORKER_GROUP, shard_of
from shadows.core.layout import REFRESH_SECONDS, announce, forget, read_layouts
from shadows.core.routing import all_shards

#: Entries read per round trip while looking for stranded tasks.
PAGE = 1000
#: Stranded keys named in a refusal (the count is given in full).
NAMED = 5

if TYPE_CHECKING:
    from shadows.core.backend import Backend


@dataclass(frozen=True)
class ShardWork:
    """One shard's work as read now."""

    shard: int
    prefix: str
    stream: int
    pending: int
    scheduled: int
    failed: int

    @property
    def busy(self) -> bool:
        """Whether it holds work (messages, scheduled tasks or dead letters)."""
        return bool(self.stream or self.pending or self.scheduled or self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "prefix": self.prefix,
            "stream": self.stream,
            "pending": self.pending,
            "scheduled": self.scheduled,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class ShardReport:
    """The recorded counts (count -> last announced, ms) and every shard's work."""

    counts: dict[int, int]
    shards: list[ShardWork]


class ShardsBusy(Exception):
    """A count that cannot be forgotten yet (the message says why)."""


async def read_shard(shadow: Backend, shard: int) -> ShardWork:
    keys = shadow.keys.of_shard(shard)
    async with shadow.client.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.stream)
        pipe.xpending(keys.stream, WORKER_GROUP)
        pipe.zcard(keys.queue)
        pipe.zcard(keys.failed)
        length, pending, scheduled, failed = await pipe.execute(raise_on_error=False)
    held = 0 if isinstance(pending, Exception) else int(pending["pending"])  # no group yet
    return ShardWork(shard, keys.prefix, int(length), held, int(scheduled), int(failed))


async def report(shadow: Backend) -> ShardReport:
    """The layout record and the work of every shard it (or this process) may use."""
    counts = await read_layouts(shadow.client, shadow.keys)
    shards = all_shards([*counts, shadow.shards])
    return ShardReport(counts, [await read_shard(shadow, shard) for shard in shards])


def quiet_for(shadow: Backend) -> timedelta:
    """How long a count must go unannounced before it may be forgotten: longer than
    producers (every REFRESH_SECONDS) and workers (every heartbeat) announce theirs."""
    seconds = max(REFRESH_SECONDS, shadow.heartbeat_interval.total_seconds())
    return timedelta(seconds=3 * seconds)


async def record(shadow: Backend, count: int) -> dict[int, int]:
    """Record ``count`` ahead of the processes that will run with it."""
    if count < 1:
        raise ValueError(f"a shard count is at least 1, not {count}")
    return await announce(shadow.client, shadow.keys, count)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _live_keys(shadow: Backend, shard: int) -> list[tuple[str, str | None]]:
    """``(key, function)`` of every task scheduled in or ready on ``shard`` (function
    ``None`` where the queue holds only the key), read a page at a time: ZSCAN (not pages
    by rank, which skip a member when an earlier one leaves meanwhile) returns every task
    that stays queued throughout, and XRANGE pages by id."""
    keys, client = shadow.keys.of_shard(shard), shadow.client
    found: list[tuple[str, str | None]] = [
        (_text(member), None) async for member, _ in client.zscan_iter(keys.queue, count=PAGE)
    ]
    after = "-"
    while entries := await client.xrange(keys.stream, after, "+", count=PAGE):
        for _, fields in entries:
            named = {_text(name): _text(value) for name, value in (fields or {}).items()}
            if "key" in named:
                found.append((named["key"], named.get("function")))
        after = "(" + _text(entries[-1][0])
    return found


async def stranded(
    shadow: Backend, count: int, rest: Sequence[int], lives_home: Callable[[str], bool]
) -> list[str]:
    """Live tasks ``count`` placed in a shard it shares with the remaining counts ``rest``
    under a key that each of those routes to another shard: once ``count`` is forgotten,
    an add of such a key would look only there and add it a second time (a task added
    under 1 shard, due next month, after growing to 3). A task whose function
    ``lives_home`` is in shard 0 under any count and not stranded; a function not known
    here counts as stranded, to be safe."""
    found: list[str] = []
    shared = range(min(count, len(all_shards(rest))))
    for shard in shared:
        candidates = [
            (key, function)
            for key, function in await _live_keys(shadow, shard)
            if shard_of(key, count) == shard and all(shard_of(key, n) != shard for n in rest)
        ]
        if shard != 0 or not candidates:
            found += [key for key, _ in candidates]
            continue
        unknown = [key for key, function in candidates if function is None]
        if unknown:  # a scheduled task: its function is in its run record
            keys = shadow.keys.of_shard(shard)
            async with shadow.client.pipeline(transaction=False) as pipe:
                for key in unknown:
                    pipe.hget(keys.run(key), "function")
                functions = dict(zip(unknown, await pipe.execute(), strict=True))
            candidates = [(k, f if f is not None else functions.get(k)) for k, f in candidates]
        found += [
            key
            for key, function in candidates
            if function is None or not lives_home(_text(function))
        ]
    return found


async def forget_count(
    shadow: Backend, count: int, lives_home: Callable[[str], bool] = lambda _: False
) -> None:
    """Remove ``count`` from the layout record; raises :class:`ShardsBusy` while a
    process announced it lately, the shards only it reads hold work, or it left tasks
    the remaining counts would not find (:func:`stranded`; ``lives_home`` names the
    functions of tasks routed to the home shard)."""
    counts = await read_layouts(shadow.client, shadow.keys)
    if count not in counts:
        raise ShardsBusy(f"{count} is not a recorded shard count (recorded: {_listed(counts)})")
    rest = [n for n in counts if n != count]
    if not rest:
        raise ShardsBusy(f"{count} is the only recorded shard count: nothing would read it")
    quiet = quiet_for(shadow)
    age_ms = int(time.time() * 1000) - counts[count]
    if age_ms < quiet.total_seconds() * 1000:
        raise ShardsBusy(
            f"a producer or worker announced {count} shard(s) {age_ms / 1000:.1f} s ago: "
            f"stop every process running with it, then wait {quiet.total_seconds():.0f} s"
        )
    kept = len(all_shards(rest))
    busy = [w for w in [await read_shard(shadow, s) for s in range(kept, count)] if w.busy]
    if busy:
        described = ", ".join(
            f"shard {w.shard} ({w.stream} in the stream, {w.pending} pending, "
            f"{w.scheduled} scheduled, {w.failed} failed)"
            for w in busy
        )
        raise ShardsBusy(f"the shards only {count} reads still hold work: {described}")
    left = await stranded(shadow, count, rest, lives_home)
    if left:
        named = ", ".join(left[:NAMED]) + (", ..." if len(left) > NAMED else "")
        raise ShardsBusy(
            f"{len(left)} task(s) added under {count} shard(s) wait in shards the other "
            f"counts share, under keys they route elsewhere ({named}): wait until they "
            "have run, or cancel them and add them again (give --tasks when some are "
            "tasks with a concurrency limit or flow control, which stay home)"
        )
    await forget(shadow.client, shadow.keys, count)


def _listed(counts: dict[int, int]) -> str:
    return ", ".join(str(n) for n in sorted(counts)) or "none"
