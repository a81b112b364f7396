"""Counting deliveries for poison protection, in the run record.

Redis's own delivery count (``XPENDING``) misses a worker restarted under the same name
(containers keep their hostname and PID 1): it takes its own pending messages back
without a new delivery, so a task that kills its worker would run again at every
restart. Instead, the scripts that hand a message to a worker (READ, START: every
recovered or reclaimed message passes through START before it runs) count it in the run
record, once per *worker run* (``instance``, new each time a worker starts running):
reconnections, stalls and retried calls of one worker run never count twice, a restart
under the same name does. A delivery handed back without running (a full concurrency
pool, a stopping worker) is taken off again.

A task that kills its worker takes the worker's other tasks down with it, and a worker
restarted under the same name takes them all back together: counted alike, they would
all end as poison. So a *suspect*, a message whose earlier deliveries (at least
:func:`suspect_after`, the last to another worker run) were never settled, runs alone:
START takes it only when the worker runs nothing else, and takes nothing more with it
(the others wait in the worker's pending list, uncounted), and the worker reads nothing
else until it ends. Only the task that kills its worker keeps being counted; a neighbour
is counted at most ``suspect_after`` times with it, then runs alone and ends. After one
death (a plain crash), messages are not suspects yet: they all run again at once.
"""

from __future__ import annotations

import uuid

# Lua helpers, prepended to the scripts that hand out or hand back messages.
LUA = r"""
-- Mark the run of message `id` as running on `consumer` and count the delivery to the
-- worker run `instance` once; returns the count. A run record that does not know the
-- message (none, or of another message) leaves the count to Redis (XPENDING).
local function take(stream, group, run, id, instance, consumer, now)
  local seen = redis.call('HMGET', run, 'message', 'delivered_to', 'deliveries')
  if seen[1] ~= id then
    if redis.call('EXISTS', run) == 1 then
      redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now)
    end
    local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
    if ok and #entries > 0 then return tonumber(entries[1][4]) end
    return 1
  end
  local count = tonumber(seen[3] or '0')
  if seen[2] ~= instance then count = count + 1 end
  redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now,
             'delivered_to', instance, 'deliveries', count)
  return count
end

-- Was message `id` delivered at least `after` times before, last to another worker run
-- that did not settle it (its worker died, or lost it)? Such a *suspect* runs alone.
local function suspect(run, id, instance, after)
  local seen = redis.call('HMGET', run, 'message', 'delivered_to', 'deliveries')
  return seen[1] == id and seen[2] ~= false and seen[2] ~= instance
         and tonumber(seen[3] or '0') >= after
end

-- The deliveries counted for the run of `run` less the one `instance` hands back now
-- (it did not run the message), given the record's {delivered_to, deliveries}.
local function handed_back(seen, instance)
  local count = tonumber(seen[2] or '0')
  if seen[1] == instance and count > 0 then count = count - 1 end
  return count
end
"""


def suspect_after(max_deliveries: int) -> int:
    """Unsettled deliveries after which a message runs alone: two (one crash is not
    suspicious), fewer when the limit is lower (a neighbour must stay under it)."""
    return max(1, min(2, max_deliveries - 1))


def new_instance() -> str:
    """A token for one worker run (deliveries to it are counted once)."""
    return uuid.uuid4().hex
