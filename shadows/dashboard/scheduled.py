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

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: Queue entries one search call examines at most (about 10 ms of Redis time).
STEP = 5_000
#: How long one page's search may go on before it returns what it found: with the last
#: call and the rendering, a page is served within 200 ms.
TIME_BUDGET = 0.12

# KEYS: queue
# ARGV: key prefix, first rank, page size, text ('' for any), task name ('' for any),
#       entries to examine at most (searches)
# Returns {queue size, rank to go on from (-1 at the end), {key, due, function, attempt}...}.
SCHEDULED_PAGE = r"""
local queue, prefix = KEYS[1], ARGV[1]
local rank, size = tonumber(ARGV[2]), tonumber(ARGV[3])
local text, task, budget = ARGV[4], ARGV[5], tonumber(ARGV[6])
local total = redis.call('ZCARD', queue)
local found = {}
local function describe(key)
  local f = redis.call('HMGET', prefix .. 'parked:' .. key, 'function', 'attempt')
  return f[1] or '', f[2] or '0'
end
local function task_of(key)
  return redis.call('HGET', prefix .. 'parked:' .. key, 'function') or ''
end
if text == '' and task == '' then
  local rows = redis.call('ZRANGE', queue, rank, rank + size - 1, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local fn, attempt = describe(rows[i])
    found[#found + 1] = {rows[i], rows[i + 1], fn, attempt}
  end
  local after = rank + #rows / 2
  if after >= total then after = -1 end
  return {total, after, found}
end
local examined = 0
while examined < budget do
  local chunk = math.min(500, budget - examined)
  local rows = redis.call('ZRANGE', queue, rank, rank + chunk - 1, 'WITHSCORES')
  if #rows == 0 then return {total, -1, found} end
  for i = 1, #rows, 2 do
    local key = rows[i]
    rank, examined = rank + 1, examined + 1
    local in_key = text ~= '' and string.find(key, text, 1, true)
    local fn = ''
    if task ~= '' or not in_key then fn = task_of(key) end
    if (task == '' or fn == task)
       and (text == '' or in_key or string.find(fn, text, 1, true)) then
      local described, attempt = describe(key)
      found[#found + 1] = {key, rows[i + 1], described, attempt}
      if #found == size then return {total, rank, found} end
    end
  end
end
return {total, rank, found}
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
    """The ``size`` future tasks from rank ``start`` on (those matching, when searching)."""
    script = shadow.client.register_script(SCHEDULED_PAGE)
    keys = [shadow.keys.queue]
    prefix = shadow.keys.prefix
    searching = bool(text or task)
    deadline = time.monotonic() + TIME_BUDGET
    found: list[ScheduledTask] = []
    rank: int | None = max(0, start)
    total = 0
    while rank is not None:
        reply = await script(keys=keys, args=[prefix, rank, size - len(found), text, task, STEP])
        total, following, rows = int(reply[0]), int(reply[1]), reply[2]
        found += (_task(row) for row in rows)
        rank = following if following >= 0 else None
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
