"""The scheduled list: future tasks by due time, one page at a time, searchable.

The queue is a sorted set by due time, so a page is a range of ranks: O(log n + page) in
Redis, with the task name and attempt read from each task's parked hash, whatever the
queue's size. A search (text in the key or task name, or one task name) walks the queue
from a rank in bounded steps (:data:`STEP` entries per script call, so Redis is never held
for long) until the page is full, the queue ends or :data:`TIME_BUDGET` has passed; the
page then says where to go on from. Ranks shift as tasks fall due, which a live list
accepts: a task may show on two pages, or on none, while it moves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shadows.core.keys import Keys
from shadows.core.layout import every_shard
from shadows.core.script_calls import read_only

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: Queue entries one search call examines at most (a few ms of Redis time).
STEP = 1_000
#: How long one page's search may go on before it returns what it found: with the last
#: call and the rendering, a page is served within 200 ms.
TIME_BUDGET = 0.12

# KEYS: queue, then the parked key of each task key in ARGV
# ARGV: how many tasks the page still wants, text ('' for any), task name ('' for any),
#       then task keys read from the queue beforehand, in order (a script declares every
#       key it touches, which a cluster requires)
# Returns {queue size, how many of the keys it examined, {key, due, function, attempt}...}:
# it stops at the key that fills the page; a key that left the queue meanwhile is skipped.
SCHEDULED_PAGE = r"""
local queue = KEYS[1]
local size, text, task = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local found, examined = {}, 0
for i = 4, #ARGV do
  local key = ARGV[i]
  examined = examined + 1
  local score = redis.call('ZSCORE', queue, key)
  if score then
    local f = redis.call('HMGET', KEYS[i - 2], 'function', 'attempt')
    local fn = f[1] or ''
    if (task == '' or fn == task) and (text == '' or string.find(key, text, 1, true)
                                       or string.find(fn, text, 1, true)) then
      found[#found + 1] = {key, score, fn, f[2] or '0'}
      if #found == size then break end
    end
  end
end
return {redis.call('ZCARD', queue), examined, found}
"""


@dataclass(frozen=True, slots=True)
class ScheduledTask:
    key: str
    function: str
    when_ms: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ScheduledPage:
    tasks: list[ScheduledTask]
    #: Future tasks in the queue (all of them, not only the matches).
    total: int
    start: int
    #: The rank to go on from, ``None`` when the queue ends on this page.
    following: int | None
    searching: bool
    #: A search stopped by its time budget before it filled the page.
    cut_short: bool


async def scheduled_page(
    shadow: Shadow, start: int = 0, size: int = 50, text: str = "", task: str = ""
) -> ScheduledPage:
    """The ``size`` future tasks from rank ``start`` on (those matching, when searching).

    Over several shards, each shard's first ``start + size`` (matches) are merged by due
    time and the page sliced from them: exact, at a cost that grows with the rank."""
    shards = await every_shard(shadow)
    if len(shards) == 1:
        return await _shard_page(shadow, shards[0], start, size, text, task)
    start = max(0, start)
    pages = [await _shard_page(shadow, keys, 0, start + size, text, task) for keys in shards]
    merged = sorted((t for page in pages for t in page.tasks), key=lambda t: t.when_ms)
    total = sum(page.total for page in pages)
    more = any(page.following is not None for page in pages) or len(merged) > start + size
    return ScheduledPage(
        merged[start : start + size],
        total,
        start,
        start + size if more else None,
        bool(text or task),
        any(page.cut_short for page in pages),
    )


async def _shard_page(
    shadow: Shadow, keys: Keys, start: int, size: int, text: str, task: str
) -> ScheduledPage:
    script = shadow.client.register_script(SCHEDULED_PAGE)
    client = shadow.client
    searching = bool(text or task)
    deadline = time.monotonic() + TIME_BUDGET
    found: list[ScheduledTask] = []
    rank: int | None = max(0, start)
    total = 0
    while rank is not None:
        chunk = STEP if searching else size
        page: list[Any] = await client.zrange(keys.queue, rank, rank + chunk - 1)
        if not page:
            total, rank = await client.zcard(keys.queue), None
            break
        declared = [keys.queue, *(keys.parked(_text(key)) for key in page)]
        reply = await read_only(client, script, declared, [size - len(found), text, task, *page])
        total, examined, rows = int(reply[0]), int(reply[1]), reply[2]
        found += (_task(row) for row in rows)
        rank += examined
        if rank >= total:
            rank = None
        if not searching or len(found) >= size or time.monotonic() > deadline:
            break
    cut_short = searching and rank is not None and len(found) < size
    return ScheduledPage(found, total, max(0, start), rank, searching, cut_short)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _task(row: list[Any]) -> ScheduledTask:
    key, score, function, attempt = row
    return ScheduledTask(
        key=_text(key),
        function=_text(function) or "?",
        when_ms=int(float(score)),
        attempt=int(attempt or 0),
    )
