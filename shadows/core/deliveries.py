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

-- The deliveries counted for the run of `run` less the one `instance` hands back now
-- (it did not run the message), given the record's {delivered_to, deliveries}.
local function handed_back(seen, instance)
  local count = tonumber(seen[2] or '0')
  if seen[1] == instance and count > 0 then count = count - 1 end
  return count
end
"""


def new_instance() -> str:
    """A token for one worker run (deliveries to it are counted once)."""
    return uuid.uuid4().hex
