"""The registry of live workers: who is there, since when, and which tasks each can run.

Every worker writes a heartbeat (one Lua script) every ``heartbeat_interval``:

* ``{name}:workers``, a sorted set of worker names scored by their last heartbeat;
* ``{name}:worker:{worker}``, a hash with its concurrency, running count, start time, host
  and tally (what it has run so far, per task: see :mod:`shadows.tally`);
* ``{name}:worker-tasks:{worker}``, the set of task names it has registered.

The two per-worker keys expire after ``missed_heartbeats`` intervals (settings of the
worker's :class:`~shadows.Shadow`), so a worker that dies drops out of the registry by
itself, on the Redis server's clock; readers only list names whose hash still exists, so
every reader agrees, whatever its own settings and clock. Each heartbeat also prunes a
few names of the sorted set whose keys have expired, and the set itself expires once
every worker is gone, so nothing grows without bound. A worker that stops cleanly
removes its entries at once.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shadows.core.execution import from_ms
from shadows.core.script_calls import read_only

if TYPE_CHECKING:
    from shadows.core.backend import Backend

#: Defaults of ``Shadow(heartbeat_interval=..., missed_heartbeats=...)``: how often a
#: worker beats, and how many intervals without a beat it stays listed.
HEARTBEAT_INTERVAL = timedelta(seconds=2)
MISSED_HEARTBEATS = 3
#: Beating faster than this would only load Redis.
MINIMUM_HEARTBEAT_INTERVAL = timedelta(milliseconds=10)

#: Dead names one heartbeat removes from the sorted set at most (bounds its work).
_PRUNE = 100

# KEYS: workers, worker hash, worker tasks
# ARGV: name, now_ms, window_ms, concurrency, running, started_ms,
#       dead_before_ms (now - window), host, tally, instance token, tasks...
# The hash also holds the instance's token and ``beats``, how many beats this entry has
# had (it starts again at 1 after a lapse). An entry held by another token is left
# alone: returns {'taken', beats, pttl} of the holder. Otherwise returns {'ok', stale}
# when the entry was there, {'new', stale} when it was not (a first beat, or one after a
# lapse); stale: the names not heard of within the window (at most a few), which PRUNE
# checks.
HEARTBEAT = r"""
local workers, info, tasks = KEYS[1], KEYS[2], KEYS[3]
local name, now, window = ARGV[1], ARGV[2], tonumber(ARGV[3])
local token = ARGV[10]
local holder = redis.call('HGET', info, 'token')
if holder and holder ~= token and token ~= '' then
  return {'taken', redis.call('HGET', info, 'beats') or '0', redis.call('PTTL', info)}
end
local status = 'ok'
if redis.call('EXISTS', info) == 0 then status = 'new' end
redis.call('ZADD', workers, now, name)
local ttl = redis.call('PTTL', workers)
if ttl < window then redis.call('PEXPIRE', workers, window) end
redis.call('HSET', info, 'concurrency', ARGV[4], 'running', ARGV[5], 'started', ARGV[6],
           'host', ARGV[8], 'tally', ARGV[9], 'token', token)
redis.call('HINCRBY', info, 'beats', 1)
redis.call('PEXPIRE', info, window)
redis.call('DEL', tasks)
if #ARGV >= 11 then
  redis.call('SADD', tasks, unpack(ARGV, 11))
  redis.call('PEXPIRE', tasks, window)
end
return {status, redis.call('ZRANGE', workers, '-inf', ARGV[7], 'BYSCORE', 'LIMIT', 0, %d)}
""" % (_PRUNE,)  # noqa: UP031 -- a Lua literal, not a log message

# KEYS: workers, then the worker hash and worker tasks of each name in ARGV
# ARGV: names a heartbeat found stale
# Removes the names whose hash has expired (a worker that came back is kept).
PRUNE = r"""
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[2 * i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('DEL', KEYS[2 * i + 1])
  end
end
return 0
"""

# KEYS: workers, worker hash, worker tasks
# ARGV: name, instance token ('' for any)
# Leaves nothing behind, unless the entry is another instance's (it took the name after
# this one lapsed): that entry stays. Returns 1 when removed.
LEAVE = r"""
local holder = redis.call('HGET', KEYS[2], 'token')
if ARGV[2] ~= '' and holder and holder ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""

# KEYS: workers, then the worker hash and worker tasks of each name in ARGV
# ARGV: task name ('' for every worker), then the names read from the registry
# Returns {name, last heartbeat ms, {hash fields...}, {task names...}} per live worker.
LIST = r"""
local task = ARGV[1]
local found = {}
for i = 2, #ARGV do
  local name = ARGV[i]
  local info, tasks = KEYS[2 * i - 2], KEYS[2 * i - 1]
  local score = redis.call('ZSCORE', KEYS[1], name)
  if score and redis.call('EXISTS', info) == 1
     and (task == '' or redis.call('SISMEMBER', tasks, task) == 1) then
    found[#found + 1] = {name, score, redis.call('HGETALL', info),
                         redis.call('SMEMBERS', tasks)}
  end
end
return found
"""


def check_heartbeats(interval: timedelta, missed: int) -> tuple[timedelta, int]:
    """The heartbeat settings of a shadow, or a clear error for values that cannot work."""
    if not isinstance(interval, timedelta):
        raise TypeError(f"heartbeat_interval must be a timedelta, not {type(interval).__name__}")
    if interval < MINIMUM_HEARTBEAT_INTERVAL:
        raise ValueError(
            "heartbeat_interval must be a positive timedelta of at least 10 ms, "
            f"not {interval.total_seconds()} s"
        )
    if isinstance(missed, bool) or not isinstance(missed, int):
        raise TypeError(f"missed_heartbeats must be an int, not {type(missed).__name__}")
    if missed < 1:
        raise ValueError(f"missed_heartbeats must be a positive integer, not {missed}")
    return interval, missed


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker as its last heartbeat described it."""

    name: str
    #: When its last heartbeat reached Redis (by the worker's clock).
    last_seen: datetime
    #: The task names it can run.
    tasks: frozenset[str]
    concurrency: int
    #: Tasks it was running at its last heartbeat.
    running: int
    #: When it started (``None`` if unknown).
    started: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form used by ``shadows workers ls --json``."""
        return {
            "name": self.name,
            "last_seen": self.last_seen.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "concurrency": self.concurrency,
            "running": self.running,
            "tasks": sorted(self.tasks),
        }


@dataclass(frozen=True, slots=True)
class Presence:
    """What a worker announces in each heartbeat."""

    name: str
    concurrency: int
    running: int
    started_ms: int
    tasks: Sequence[str]
    #: The machine it runs on.
    host: str = field(default_factory=socket.gethostname)
    #: Its counts so far, per task (:mod:`shadows.tally`): a dashboard's throughput.
    tally: str = ""
    #: This run of the worker (two live workers under one name have different ones);
    #: ``""`` writes the entry whoever holds it.
    token: str = ""


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat found in Redis."""

    #: ``ok``: the entry was there; ``new``: it was not (first beat, or after a lapse);
    #: ``taken``: another instance holds the name (nothing was written).
    status: str
    #: For ``taken``: how many beats the holder's entry has had, and its time to live
    #: (ms).
    beats: int = 0
    ttl_ms: int = 0


async def beat(shadow: Backend, presence: Presence, window_ms: int, now: int) -> Beat:
    """Write one heartbeat of ``presence``, valid for ``window_ms``."""
    keys = shadow.keys
    script = shadow.client.register_script(HEARTBEAT)
    reply = await script(
        keys=[keys.workers, keys.worker(presence.name), keys.worker_tasks(presence.name)],
        args=[
            presence.name,
            now,
            window_ms,
            presence.concurrency,
            presence.running,
            presence.started_ms,
            now - window_ms,
            presence.host,
            presence.tally,
            presence.token,
            *presence.tasks,
        ],
    )
    status = _text(reply[0])
    if status == "taken":
        return Beat(status, int(reply[1]), int(reply[2]))
    stale = reply[1]
    if stale:
        await shadow.client.register_script(PRUNE)(
            keys=[keys.workers, *_worker_keys(shadow, stale)], args=stale
        )
    return Beat(status)


def _worker_keys(shadow: Backend, names: Sequence[bytes | str]) -> list[str]:
    """The hash and the task set of each worker name (the keys a script declares)."""
    found: list[str] = []
    for name in names:
        text = _text(name)
        found += [shadow.keys.worker(text), shadow.keys.worker_tasks(text)]
    return found


async def leave(shadow: Backend, name: str, token: str = "") -> None:
    """Remove the worker ``name`` from the registry at once (only the entry of the
    instance ``token``, when given)."""
    keys = shadow.keys
    script = shadow.client.register_script(LEAVE)
    await script(
        keys=[keys.workers, keys.worker(name), keys.worker_tasks(name)], args=[name, token]
    )


async def list_workers(shadow: Backend, task: str | None = None) -> list[WorkerInfo]:
    """The live workers (those that can run ``task``, when given), by name."""
    keys = shadow.keys
    names: list[Any] = await shadow.client.zrange(keys.workers, 0, -1)
    script = shadow.client.register_script(LIST)
    rows = await read_only(
        shadow.client, script, [keys.workers, *_worker_keys(shadow, names)], [task or "", *names]
    )
    workers = [_worker_info(row) for row in rows]
    workers.sort(key=lambda worker: worker.name)
    return workers


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _worker_info(row: Sequence[Any]) -> WorkerInfo:
    name, score, flat, tasks = row
    fields: Mapping[str, str] = {
        _text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)
    }
    started = int(fields.get("started") or 0)
    return WorkerInfo(
        name=_text(name),
        last_seen=from_ms(int(float(score))),
        tasks=frozenset(_text(task) for task in tasks),
        concurrency=int(fields.get("concurrency") or 0),
        running=int(fields.get("running") or 0),
        started=from_ms(started) if started else None,
    )
