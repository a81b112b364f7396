"""A picture of everything a shadow holds: future, queued and running tasks, and workers.

Speed matters here, because a snapshot of a busy shadow may cover hundreds of thousands of
tasks, and redis-py parses replies in pure Python at microseconds per element. So each page
of tasks is read by one Lua script that packs the whole page into two strings: numbers per
task (due time, attempt, lengths of the text fields) and the concatenated bytes of those
fields. Python splits them with a few C-level calls per task, asks for the next page before
parsing the current one (so Redis and Python work at the same time), and never decodes an
argument unless it is read.

Pages are separate script calls, so Redis is never blocked for long, but the whole is not
one atomic picture: a task that moves while the snapshot is taken (from the queue to the
stream, say) may be seen in both places, and is then reported once, in its later place,
or, when it moves backwards (a retry), missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from .execution import from_ms
from .keys import WORKER_GROUP
from .registry import WorkerInfo, list_workers
from .serialization import Codec

if TYPE_CHECKING:
    from .shadow import Shadow

#: Tasks read by one script call: small enough to keep Redis responsive meanwhile
#: (a page takes Redis a few milliseconds).
PAGE = 1000

State = Literal["scheduled", "queued", "running"]

# KEYS: queue
# ARGV: key prefix, lowest score, how many entries of that score to skip, page size,
#       '1' to read the arguments too
# Returns {numbers, bytes, last score, how many of the page have the last score}: per
# task "score attempt len(key) len(function) len(args) len(kwargs)", and those four fields
# concatenated.
QUEUE_PAGE = r"""
local prefix, low, skip, page = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {'function', 'attempt'}
if ARGV[5] == '1' then fields = {'function', 'attempt', 'args', 'kwargs'} end
local rows = redis.call('ZRANGE', KEYS[1], low, '+inf', 'BYSCORE', 'LIMIT', skip, page,
                        'WITHSCORES')
local numbers, data, n, d = {}, {}, 0, 0
local last, tied = '', 0
for i = 1, #rows, 2 do
  local key, score = rows[i], rows[i + 1]
  local f = redis.call('HMGET', prefix .. 'parked:' .. key, unpack(fields))
  local fn, args, kwargs = f[1] or '', f[3] or '', f[4] or ''
  numbers[n + 1], numbers[n + 2], numbers[n + 3] = score, f[2] or '0', #key
  numbers[n + 4], numbers[n + 5], numbers[n + 6] = #fn, #args, #kwargs
  data[d + 1], data[d + 2], data[d + 3], data[d + 4] = key, fn, args, kwargs
  n, d = n + 6, d + 4
  if score == last then tied = tied + 1 else last, tied = score, 1 end
end
return {table.concat(numbers, ' '), table.concat(data), last, tied}
"""

# KEYS: stream
# ARGV: group, key prefix, first id (inclusive '-' or exclusive '(id'), page size,
#       '1' to read the arguments too
# Returns {numbers, bytes, last id}: per entry "when attempt started len(key)
# len(function) len(worker) len(args) len(kwargs)", started being -1 for an entry no
# worker has received; the worker is the consumer that holds the entry.
STREAM_PAGE = r"""
local stream, group, prefix = KEYS[1], ARGV[1], ARGV[2]
local start, page = ARGV[3], tonumber(ARGV[4])
local entries = redis.call('XRANGE', stream, start, '+', 'COUNT', page)
if #entries == 0 then return {'', '', ''} end
local first, last = entries[1][1], entries[#entries][1]
local owners = {}
local ok, pending = pcall(redis.call, 'XPENDING', stream, group, first, last, page * 2)
if ok then
  for _, p in ipairs(pending) do owners[p[1]] = p[2] end
end
local numbers, data, n, d = {}, {}, 0, 0
for _, entry in ipairs(entries) do
  local values = {}
  local fields = entry[2]
  for i = 1, #fields, 2 do values[fields[i]] = fields[i + 1] end
  local key, fn = values['key'] or '', values['function'] or ''
  local args, kwargs = '', ''
  if ARGV[5] == '1' then args, kwargs = values['args'] or '', values['kwargs'] or '' end
  local owner = owners[entry[1]]
  local started = '-1'
  if owner then
    started = redis.call('HGET', prefix .. 'run:' .. key, 'started') or '0'
  else
    owner = ''
  end
  numbers[n + 1], numbers[n + 2] = values['when'] or '0', values['attempt'] or '0'
  numbers[n + 3], numbers[n + 4], numbers[n + 5] = started, #key, #fn
  numbers[n + 6], numbers[n + 7], numbers[n + 8] = #owner, #args, #kwargs
  data[d + 1], data[d + 2], data[d + 3], data[d + 4], data[d + 5] = key, fn, owner, args, kwargs
  n, d = n + 8, d + 5
end
return {table.concat(numbers, ' '), table.concat(data), last}
"""


class ArgumentsNotRead(LookupError):
    """The arguments of a task in a snapshot taken with ``arguments=False``."""


class SnapshotTask:
    """One task in a snapshot: light to build, its arguments decoded only when read.

    It has the attributes of an :class:`~shadows.Execution` except that ``function`` is
    the task's name (the process taking the snapshot need not have the function), plus
    its ``state`` and, while it runs, the ``worker`` running it and when it ``started``.
    """

    __slots__ = (
        "_codec",
        "_decoded",
        "_raw",
        "attempt",
        "function",
        "key",
        "started_ms",
        "state",
        "when_ms",
        "worker",
    )

    def __init__(
        self,
        key: str,
        function: str,
        when_ms: int,
        attempt: int,
        state: State,
        raw: tuple[bytes, bytes] | None,
        codec: Codec,
        worker: str | None = None,
        started_ms: int = 0,
    ) -> None:
        self.key = key
        self.function = function
        self.when_ms = when_ms
        self.attempt = attempt
        self.state: State = state
        self.worker = worker
        self.started_ms = started_ms
        self._raw = raw
        self._codec = codec
        self._decoded: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    @property
    def function_name(self) -> str:
        return self.function

    @property
    def when(self) -> datetime:
        """When the task is (or was) due."""
        return from_ms(self.when_ms)

    @property
    def started(self) -> datetime | None:
        """When its worker started it (``None`` unless running and recorded)."""
        return from_ms(self.started_ms) if self.started_ms > 0 else None

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments, decoded on first use (the codec may raise)."""
        return self._arguments()[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments, decoded on first use."""
        return self._arguments()[1]

    def _arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._decoded is None:
            if self._raw is None:
                raise ArgumentsNotRead(
                    f"The arguments of task {self.key!r} were not read: take the snapshot "
                    "with arguments=True"
                )
            raw_args, raw_kwargs = self._raw
            args = self._codec.loads(raw_args) if raw_args else ()
            kwargs = self._codec.loads(raw_kwargs) if raw_kwargs else {}
            self._decoded = (tuple(args), dict(kwargs))
        return self._decoded

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form used by ``shadows snapshot --json`` (no arguments)."""
        started = self.started
        return {
            "key": self.key,
            "function": self.function,
            "state": self.state,
            "when": self.when.isoformat(),
            "attempt": self.attempt,
            "worker": self.worker,
            "started": started.isoformat() if started else None,
        }

    def __repr__(self) -> str:
        where = f", worker={self.worker!r}" if self.worker else ""
        return (
            f"SnapshotTask({self.function}, key={self.key!r}, state={self.state}, "
            f"when={self.when.isoformat()}, attempt={self.attempt}{where})"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a shadow held when the snapshot was taken."""

    #: When the snapshot was taken (just before its first page was read).
    taken: datetime
    #: Tasks not running yet, soonest first: ``scheduled`` ones (in the queue) and
    #: ``queued`` ones (due, on the stream, waiting for a free worker).
    future: Sequence[SnapshotTask]
    #: Tasks a worker has received, longest running first.
    running: Sequence[SnapshotTask]
    #: The live workers, by name.
    workers: Sequence[WorkerInfo]

    @property
    def total_tasks(self) -> int:
        return len(self.future) + len(self.running)

    def count(self, state: State) -> int:
        """How many tasks are in ``state``."""
        if state == "running":
            return len(self.running)
        return sum(1 for task in self.future if task.state == state)


async def take_snapshot(shadow: Shadow, arguments: bool = True) -> Snapshot:
    """Read every future, queued and running task of ``shadow``, and its live workers."""
    taken = datetime.now(UTC)
    tasks: dict[str, SnapshotTask] = {}
    # The queue first: work moves from the queue to the stream, so a task moving while we
    # read is seen twice (and the stream's reading wins) rather than not at all.
    for task in await _read_queue(shadow, arguments):
        tasks[task.key] = task
    for task in await _read_stream(shadow, arguments):
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


async def _paged(
    fetch: Callable[[Cursor], Awaitable[Any]],
    first: Cursor,
    follow: Callable[[Any, Cursor], Cursor | None],
    parse: Callable[[Any], None],
) -> None:
    """Fetch pages from ``first`` on, asking for the next before parsing the current."""
    reply = await fetch(first)
    cursor: Cursor | None = first
    while True:
        assert cursor is not None
        cursor = follow(reply, cursor)
        upcoming = asyncio.ensure_future(fetch(cursor)) if cursor is not None else None
        await asyncio.sleep(0)  # lets the request go out before parsing starts
        try:
            parse(reply)
        except BaseException:
            if upcoming is not None:
                upcoming.cancel()
            raise
        if upcoming is None:
            return
        reply = await upcoming


def _integers(values: list[bytes]) -> list[int]:
    try:
        return list(map(int, values))
    except ValueError:  # a score written as a float by someone else
        return [int(float(value)) for value in values]


async def _read_queue(shadow: Shadow, arguments: bool) -> list[SnapshotTask]:
    script = shadow.client.register_script(QUEUE_PAGE)
    keys = [shadow.keys.queue]
    prefix = shadow.keys.prefix
    flag = "1" if arguments else "0"
    codec = shadow.codec
    found: list[SnapshotTask] = []
    names: dict[bytes, str] = {}

    async def fetch(cursor: Cursor) -> Any:
        low, skip = cursor
        return await script(keys=keys, args=[prefix, low, skip, PAGE, flag])

    def follow(reply: Any, cursor: Cursor) -> Cursor | None:
        numbers, _, last, tied = reply
        if numbers.count(b" ") + 1 < 6 * PAGE:
            return None
        # Resume at the last score, skipping the members of that score already read
        # (members of one score come in a stable, lexical order).
        low, skip = cursor
        return (last, skip + int(tied) if last == low else int(tied))

    def parse(reply: Any) -> None:
        numbers, data = reply[0], reply[1]
        values = _integers(numbers.split())
        position = 0
        append = found.append
        for i in range(0, len(values), 6):
            key_end = position + values[i + 2]
            function_end = key_end + values[i + 3]
            args_end = function_end + values[i + 4]
            end = args_end + values[i + 5]
            raw_name = data[key_end:function_end]
            name = names.get(raw_name)
            if name is None:
                name = names[raw_name] = raw_name.decode(errors="replace")
            raw = (data[function_end:args_end], data[args_end:end]) if arguments else None
            key = data[position:key_end].decode(errors="replace")
            append(SnapshotTask(key, name, values[i], values[i + 1], "scheduled", raw, codec))
            position = end

    await _paged(fetch, (b"-inf", 0), follow, parse)
    return found


async def _read_stream(shadow: Shadow, arguments: bool) -> list[SnapshotTask]:
    script = shadow.client.register_script(STREAM_PAGE)
    keys = [shadow.keys.stream]
    args = [WORKER_GROUP, shadow.keys.prefix]
    flag = "1" if arguments else "0"
    codec = shadow.codec
    found: list[SnapshotTask] = []

    async def fetch(cursor: Cursor) -> Any:
        return await script(keys=keys, args=[*args, cursor[0], PAGE, flag])

    def follow(reply: Any, cursor: Cursor) -> Cursor | None:
        numbers, _, last = reply
        if not numbers or numbers.count(b" ") + 1 < 8 * PAGE:
            return None
        return (b"(" + last,)

    def parse(reply: Any) -> None:
        numbers, data = reply[0], reply[1]
        values = _integers(numbers.split())
        position = 0
        for i in range(0, len(values), 8):
            key_end = position + values[i + 3]
            function_end = key_end + values[i + 4]
            worker_end = function_end + values[i + 5]
            args_end = worker_end + values[i + 6]
            end = args_end + values[i + 7]
            started = values[i + 2]
            found.append(
                SnapshotTask(
                    data[position:key_end].decode(errors="replace"),
                    data[key_end:function_end].decode(errors="replace"),
                    values[i],
                    values[i + 1],
                    "running" if started >= 0 else "queued",
                    (data[worker_end:args_end], data[args_end:end]) if arguments else None,
                    codec,
                    worker=data[function_end:worker_end].decode(errors="replace") or None,
                    started_ms=max(started, 0),
                )
            )
            position = end

    await _paged(fetch, (b"-",), follow, parse)
    return found
