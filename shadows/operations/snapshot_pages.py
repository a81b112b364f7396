"""Reading a snapshot page by page (see :mod:`shadows.operations.snapshot`): one Lua
script call per page of the queue or the stream, the next page asked for before the
current one is parsed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shadows.core.keys import WORKER_GROUP, Keys
from shadows.core.layout import every_shard
from shadows.core.script_calls import read_only
from shadows.operations.registry import list_workers
from shadows.operations.snapshot import RawMessage, Snapshot, SnapshotTask

if TYPE_CHECKING:
    from shadows.core.backend import Backend

#: Tasks read by one script call: small enough to keep Redis responsive meanwhile
#: (a page takes Redis a few milliseconds).
PAGE = 1000

# Both page scripts describe each task with numbers, then its text: the numbers end with
# the count of message fields that follow the text (0 unless the arguments are read) and
# the lengths of their names and values; the text is the task's key, its task name, for
# stream entries the name of the worker holding it, then those fields, all concatenated.
# The whole message is needed to decode the arguments, because a message names its codec
# and may be signed over all its fields.

# KEYS: queue, then the parked key of each task key in ARGV
# ARGV: '1' to read the arguments too, then a page of task keys (read from the queue
#       beforehand: a script declares every key it touches, which a cluster requires)
# Returns {numbers, text, last score, how many of the page have the last score, count}:
# per task "score attempt len(key) len(function) field-count field-lengths..."; a key
# that left the queue meanwhile is left out.
QUEUE_PAGE = r"""
local whole = ARGV[1] == '1'
local numbers, data, n, d = {}, {}, 0, 0
local last, tied = '', 0
for i = 2, #ARGV do
  local key, parked = ARGV[i], KEYS[i]
  local score = redis.call('ZSCORE', KEYS[1], key)
  if score then
    local fn, attempt, fields = '', '0', {}
    if whole then
      fields = redis.call('HGETALL', parked)
      for j = 1, #fields, 2 do
        if fields[j] == 'function' then fn = fields[j + 1]
        elseif fields[j] == 'attempt' then attempt = fields[j + 1] end
      end
    else
      local f = redis.call('HMGET', parked, 'function', 'attempt')
      fn, attempt = f[1] or '', f[2] or '0'
    end
    numbers[n + 1], numbers[n + 2], numbers[n + 3] = score, attempt, #key
    numbers[n + 4], numbers[n + 5] = #fn, #fields / 2
    n = n + 5
    data[d + 1], data[d + 2] = key, fn
    d = d + 2
    for j = 1, #fields do
      numbers[n + j], data[d + j] = #fields[j], fields[j]
    end
    n, d = n + #fields, d + #fields
    if score == last then tied = tied + 1 else last, tied = score, 1 end
  end
end
return {table.concat(numbers, ' '), table.concat(data), last, tied, #ARGV - 1}
"""

# KEYS: stream
# ARGV: group, first id (inclusive '-' or exclusive '(id'), page size, '1' to read the
#       arguments too
# Returns {numbers, text, last id, count, keys of the received entries}: per entry "when
# attempt started len(key) len(function) len(worker) field-count field-lengths...",
# started being -1 for an entry no worker has received and 0 for one received (its run
# record says when it started: read next, as the script cannot declare it); the worker
# is the consumer that holds the entry.
STREAM_PAGE = r"""
local stream, group = KEYS[1], ARGV[1]
local start, page, whole = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local entries = redis.call('XRANGE', stream, start, '+', 'COUNT', page)
if #entries == 0 then return {'', '', '', 0, {}} end
local first, last = entries[1][1], entries[#entries][1]
local owners = {}
local ok, pending = pcall(redis.call, 'XPENDING', stream, group, first, last, page * 2)
if ok then
  for _, p in ipairs(pending) do owners[p[1]] = p[2] end
end
local numbers, data, n, d = {}, {}, 0, 0
local received = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local key, fn, when, attempt = '', '', '0', '0'
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'key' then key = fields[i + 1]
    elseif name == 'function' then fn = fields[i + 1]
    elseif name == 'when' then when = fields[i + 1]
    elseif name == 'attempt' then attempt = fields[i + 1] end
  end
  if not whole then fields = {} end
  local owner = owners[entry[1]]
  local started = '-1'
  if owner then
    started = '0'
    received[#received + 1] = key
  else
    owner = ''
  end
  numbers[n + 1], numbers[n + 2], numbers[n + 3] = when, attempt, started
  numbers[n + 4], numbers[n + 5], numbers[n + 6] = #key, #fn, #owner
  numbers[n + 7] = #fields / 2
  n = n + 7
  data[d + 1], data[d + 2], data[d + 3] = key, fn, owner
  d = d + 3
  for j = 1, #fields do
    numbers[n + j], data[d + j] = #fields[j], fields[j]
  end
  n, d = n + #fields, d + #fields
end
return {table.concat(numbers, ' '), table.concat(data), last, #entries, received}
"""


async def take_snapshot(
    shadow: Backend, tasks_known: Mapping[str, Callable[..., Any]], arguments: bool = True
) -> Snapshot:
    """Read every future, queued and running task of ``shadow``, and its live workers
    (``tasks_known``: the registered functions, by name, that the tasks are tied to)."""
    taken = datetime.now(UTC)
    tasks: dict[str, SnapshotTask] = {}
    # The queue first: work moves from the queue to the stream, so a task moving while we
    # read is seen twice (and the stream's reading wins) rather than not at all.
    # Shard by shard (every shard that may hold work: see shadows.core.layout).
    for keys in await every_shard(shadow):
        for task in await _read_queue(shadow, keys, tasks_known, arguments):
            tasks[task.key] = task
        for task in await _read_stream(shadow, keys, tasks_known, arguments):
            tasks[task.key] = task
    future = [task for task in tasks.values() if task.state != "running"]
    future.sort(key=_due)
    running = [task for task in tasks.values() if task.state == "running"]
    running.sort(key=_start)
    return Snapshot(taken, future, running, await list_workers(shadow))


def _due(task: SnapshotTask) -> int:
    return task.when_ms


def _start(task: SnapshotTask) -> int:
    return task.started_ms or task.when_ms


Cursor = tuple[Any, ...]


class _Names:
    """Task names as read, decoded once each, with their registered functions."""

    def __init__(self, tasks: Mapping[str, Callable[..., Any]]) -> None:
        self._tasks = tasks
        self._seen: dict[bytes, tuple[str, Callable[..., Any] | None]] = {}

    def lookup(self, raw: bytes) -> tuple[str, Callable[..., Any] | None]:
        found = self._seen.get(raw)
        if found is None:
            name = raw.decode(errors="replace")
            found = self._seen[raw] = (name, self._tasks.get(name))
        return found


async def _paged(
    fetch: Callable[[Cursor], Awaitable[Any]],
    first: Cursor,
    follow: Callable[[Any, Cursor], Cursor | None],
    parse: Callable[[Any], None],
) -> None:
    """Fetch pages from ``first`` on, asking for the next before parsing the current."""
    cursor = first
    reply = await fetch(cursor)
    while True:
        following = follow(reply, cursor)
        upcoming = asyncio.ensure_future(fetch(following)) if following is not None else None
        try:
            await asyncio.sleep(0)  # lets the request go out before parsing starts
            parse(reply)
        except BaseException:
            if upcoming is not None:
                upcoming.cancel()
            raise
        if upcoming is None or following is None:
            return
        reply, cursor = await upcoming, following


def _integers(values: list[bytes]) -> list[int]:
    try:
        return list(map(int, values))
    except ValueError:  # a score written as a float by someone else
        return [int(float(value)) for value in values]


def _fields(values: list[int], at: int, text: bytes, position: int) -> tuple[RawMessage, int]:
    """The raw message whose field count is ``values[at]``; returns it and where it ends."""
    lengths = values[at + 1 : at + 1 + 2 * values[at]]
    end = position + sum(lengths)
    return (text[position:end], lengths), end


async def _read_queue(
    shadow: Backend, keys: Keys, tasks_known: Mapping[str, Callable[..., Any]], arguments: bool
) -> list[SnapshotTask]:
    script = shadow.client.register_script(QUEUE_PAGE)
    client = shadow.client
    flag = "1" if arguments else "0"
    payloads = shadow.payloads
    found: list[SnapshotTask] = []
    names = _Names(tasks_known)

    async def fetch(cursor: Cursor) -> Any:
        low, skip = cursor
        page: list[Any] = await client.zrange(
            keys.queue, low, "+inf", byscore=True, offset=skip, num=PAGE
        )
        if not page:
            return [b"", b"", b"", 0, 0]
        declared = [keys.queue, *(keys.parked(_text(key)) for key in page)]
        return await read_only(client, script, declared, [flag, *page])

    def follow(reply: Any, cursor: Cursor) -> Cursor | None:
        _, _, last, tied, count = reply
        if int(count) < PAGE:
            return None
        # Resume at the last score, skipping the members of that score already read
        # (members of one score come in a stable, lexical order).
        low, skip = cursor
        return (last, skip + int(tied) if last == low else int(tied))

    def parse(reply: Any) -> None:
        numbers, text = reply[0], reply[1]
        values = _integers(numbers.split())
        position = 0
        i = 0
        append = found.append
        while i < len(values):
            key_end = position + values[i + 2]
            function_end = key_end + values[i + 3]
            name, function = names.lookup(text[key_end:function_end])
            key = text[position:key_end].decode(errors="replace")
            raw: RawMessage | None = None
            position = function_end
            if values[i + 4]:
                raw, position = _fields(values, i + 4, text, position)
            append(
                SnapshotTask(
                    key,
                    name,
                    values[i],
                    values[i + 1],
                    "scheduled",
                    raw,
                    payloads,
                    function=function,
                )
            )
            i += 5 + 2 * values[i + 4]

    await _paged(fetch, (b"-inf", 0), follow, parse)
    return found


async def _read_stream(
    shadow: Backend, keys: Keys, tasks_known: Mapping[str, Callable[..., Any]], arguments: bool
) -> list[SnapshotTask]:
    script = shadow.client.register_script(STREAM_PAGE)
    client = shadow.client
    flag = "1" if arguments else "0"
    payloads = shadow.payloads
    found: list[SnapshotTask] = []
    names = _Names(tasks_known)

    async def fetch(cursor: Cursor) -> Any:
        reply = await read_only(
            client, script, [keys.stream], [WORKER_GROUP, cursor[0], PAGE, flag]
        )
        received = [_text(key) for key in reply[4]]
        starts: dict[str, int] = {}
        if received:  # when the received ones started, from their run records
            async with client.pipeline(transaction=False) as pipe:
                for key in received:
                    pipe.hget(keys.run(key), "started")
                values = await pipe.execute()
            starts = {key: int(value or 0) for key, value in zip(received, values, strict=True)}
        return [*reply[:4], starts]

    def follow(reply: Any, cursor: Cursor) -> Cursor | None:
        _, _, last, count, _ = reply
        if int(count) < PAGE:
            return None
        return (b"(" + last,)

    def parse(reply: Any) -> None:
        numbers, text, starts = reply[0], reply[1], reply[4]
        values = _integers(numbers.split())
        position = 0
        i = 0
        while i < len(values):
            key_start = position
            key_end = key_start + values[i + 3]
            function_end = key_end + values[i + 4]
            worker_end = function_end + values[i + 5]
            started = values[i + 2]
            raw: RawMessage | None = None
            position = worker_end
            if values[i + 6]:
                raw, position = _fields(values, i + 6, text, position)
            name, function = names.lookup(text[key_end:function_end])
            key = text[key_start:key_end].decode(errors="replace")
            if started >= 0:
                started = starts.get(key, 0)
            found.append(
                SnapshotTask(
                    key,
                    name,
                    values[i],
                    values[i + 1],
                    "running" if started >= 0 else "queued",
                    raw,
                    payloads,
                    worker=text[function_end:worker_end].decode(errors="replace") or None,
                    started_ms=max(started, 0),
                    function=function,
                )
            )
            i += 7 + 2 * values[i + 6]

    await _paged(fetch, (b"-",), follow, parse)
    return found


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
