"""One reading of a shadow's present: depths, what runs where, the live workers.

One script call per reading (with the registry's names read before it and the running
tasks' start times after it, since a script declares every key it touches, which a
cluster requires), whatever the number of browsers: the poller takes one
every ``poll_interval`` and every page and event stream is served from it. Its cost grows
with the running tasks (capped at :data:`RUNNING_LIMIT`) and the workers, never with the
queue or the schedule, which are only counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shadows.core.keys import WORKER_GROUP
from shadows.core.layout import every_shard
from shadows.core.script_calls import read_only
from shadows.operations.tally import parse_tally

if TYPE_CHECKING:
    from shadows.producer.shadow import Shadow

#: What a reading takes from the run record of each running task.
RUN_FIELDS = ("started", "progress_current", "progress_total", "progress_message")

#: Running tasks a reading describes one by one (the count is always exact).
RUNNING_LIMIT = 500

# KEYS: stream, queue, workers, failed, strikes-in-effect, then the worker hash and worker
#       tasks of each name in ARGV
# ARGV: group, running limit, then the names read from the registry
# Returns {stream length, delivered, scheduled, dead letters, strikes, running, workers}:
# running rows are {id, worker, key, function, when, attempt, started (0: read next from
# the run record), deliveries}, workers rows {name, last heartbeat, {hash fields...},
# {task names...}}. It writes nothing.
PULSE = r"""
local stream, queue, workers = KEYS[1], KEYS[2], KEYS[3]
local group, limit = ARGV[1], tonumber(ARGV[2])
local length = redis.call('XLEN', stream)
local delivered, running = 0, {}
local ok, summary = pcall(redis.call, 'XPENDING', stream, group)
if ok then
  delivered = summary[1]
  if delivered > 0 then
    for _, p in ipairs(redis.call('XPENDING', stream, group, '-', '+', limit)) do
      local key, fn, when, attempt = '', '', '0', '0'
      local entry = redis.call('XRANGE', stream, p[1], p[1])[1]
      if entry then
        local f = entry[2]
        for i = 1, #f, 2 do
          local name = f[i]
          if name == 'key' then key = f[i + 1]
          elseif name == 'function' then fn = f[i + 1]
          elseif name == 'when' then when = f[i + 1]
          elseif name == 'attempt' then attempt = f[i + 1] end
        end
      end
      running[#running + 1] = {p[1], p[2], key, fn, when, attempt, '0', p[4]}
    end
  end
end
local found = {}
for i = 3, #ARGV do
  local name = ARGV[i]
  local score = redis.call('ZSCORE', workers, name)
  local info = redis.call('HGETALL', KEYS[2 * i])
  if score and #info > 0 then
    found[#found + 1] = {name, score, info, redis.call('SMEMBERS', KEYS[2 * i + 1])}
  end
end
return {length, delivered, redis.call('ZCARD', queue), redis.call('ZCARD', KEYS[4]),
        redis.call('HLEN', KEYS[5]), running, found}
"""


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task a worker has received and not finished."""

    key: str
    function: str
    worker: str
    when_ms: int
    attempt: int
    #: When its worker started it (0 until the run record says).
    started_ms: int
    #: How many times the stream delivered it (more than 1: redelivered).
    deliveries: int
    #: What the task reports of its progress, once tasks can (``None`` until then): a
    #: mapping with ``current``, ``total`` and ``message``, drawn as a bar by the pages.
    progress: Mapping[str, Any] | None = None

    def to_json(self, now_ms: int) -> dict[str, Any]:
        since = self.started_ms or self.when_ms
        return {
            "key": self.key,
            "function": self.function,
            "worker": self.worker,
            "attempt": self.attempt,
            "started": self.started_ms or None,
            "age": max(0.0, (now_ms - since) / 1000),
            "deliveries": self.deliveries,
            "progress": self.progress,
        }


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One live worker, as its last heartbeat describes it."""

    name: str
    host: str
    concurrency: int
    running: int
    started_ms: int
    last_seen_ms: int
    tasks: tuple[str, ...]
    #: Its counts so far, per task, in the order of :data:`~shadows.tally.TALLY_FIELDS`.
    tally: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self, now_ms: int, running: Sequence[RunningTask]) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "concurrency": self.concurrency,
            "running": self.running,
            "heartbeat_age": max(0.0, (now_ms - self.last_seen_ms) / 1000),
            "started": self.started_ms or None,
            "tasks": list(self.tasks),
            "now": [{"key": t.key, "function": t.function} for t in running],
        }


@dataclass(frozen=True, slots=True)
class Pulse:
    """A shadow at one moment."""

    taken_ms: int
    #: Due tasks on the stream that no worker has received yet.
    ready: int
    #: Future tasks in the queue (including retries waiting for their delay).
    scheduled: int
    #: Tasks received by a worker and not finished (exact; :attr:`running` may be capped).
    running_count: int
    dead_letters: int
    strikes: int
    running: tuple[RunningTask, ...]
    workers: tuple[WorkerView, ...]


async def read_pulse(shadow: Shadow, taken_ms: int) -> Pulse:
    """Everything a tick of the dashboard shows (one script call per shard)."""
    keys, client = shadow.keys, shadow.client
    shards = await every_shard(shadow)
    names: list[Any] = await client.zrange(keys.workers, 0, -1)
    declared = [keys.stream, keys.queue, keys.workers, keys.failed, keys.strikes_in_effect]
    for name in names:
        declared += [keys.worker(_text(name)), keys.worker_tasks(_text(name))]
    script = client.register_script(PULSE)
    reply = await read_only(client, script, declared, [WORKER_GROUP, RUNNING_LIMIT, *names])
    length, delivered, scheduled, dead, strikes, running_rows, worker_rows = reply
    length, delivered, scheduled, dead = int(length), int(delivered), int(scheduled), int(dead)
    rows = [(keys, row) for row in running_rows]
    for shard in shards[1:]:
        # A shard holds no registry and no strikes: its own prefix stands in for them
        # (keys that never exist, so the script counts them as empty).
        unused = f"{shard.prefix}none"
        declared = [shard.stream, shard.queue, unused, shard.failed, unused]
        more = await read_only(client, script, declared, [WORKER_GROUP, RUNNING_LIMIT])
        length, delivered = length + int(more[0]), delivered + int(more[1])
        scheduled, dead = scheduled + int(more[2]), dead + int(more[3])
        rows += [(shard, row) for row in more[5]][: max(0, RUNNING_LIMIT - len(rows))]
    if rows:  # when they started, and their progress, from their run records
        async with client.pipeline(transaction=False) as pipe:
            for shard, row in rows:
                pipe.hmget(shard.run(_text(row[2])), RUN_FIELDS)
            for (_, row), (started, *progress) in zip(rows, await pipe.execute(), strict=True):
                row[6] = started or 0
                row += [value or "" for value in progress]
    running = tuple(sorted((_running(row) for _, row in rows), key=_since))
    workers = tuple(sorted((_worker(row) for row in worker_rows), key=lambda w: w.name))
    return Pulse(
        taken_ms=taken_ms,
        ready=max(0, length - delivered),
        scheduled=scheduled,
        running_count=delivered,
        dead_letters=dead,
        strikes=int(strikes),
        running=running,
        workers=workers,
    )


def _since(task: RunningTask) -> int:
    return task.started_ms or task.when_ms


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _running(row: Sequence[Any]) -> RunningTask:
    _, worker, key, function, when, attempt, started, deliveries, *reported = row
    current, total, message = (_text(value) for value in (reported or ("", "", "")))
    progress = None
    if current or total or message:
        progress = {
            "current": _int(current),
            "total": _int(total) if total else None,
            "message": message or None,
        }
    return RunningTask(
        progress=progress,
        key=_text(key),
        function=_text(function) or "?",
        worker=_text(worker),
        when_ms=_int(when),
        attempt=_int(attempt),
        started_ms=_int(started),
        deliveries=_int(deliveries),
    )


def _worker(row: Sequence[Any]) -> WorkerView:
    name, score, flat, tasks = row
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    return WorkerView(
        name=_text(name),
        host=fields.get("host", ""),
        concurrency=_int(fields.get("concurrency")),
        running=_int(fields.get("running")),
        started_ms=_int(fields.get("started")),
        last_seen_ms=_int(score),
        tasks=tuple(sorted(_text(task) for task in tasks)),
        tally=parse_tally(fields.get("tally", "")),
    )
