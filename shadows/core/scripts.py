"""The Lua scripts that change a shadow's state atomically.

Each script runs inside Redis as one atomic step, so two workers never move the same task
twice, a crash between two writes cannot happen halfway, and a retried call (after a lost
reply) is harmless: every script is idempotent.

The data model these scripts maintain is described in ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shadows.core.deliveries import LUA as DELIVERIES

# Shared Lua helpers, prepended to the scripts that place work.
_PRELUDE = r"""
-- What a run leaves in its record (its outcome, progress, a revocation), cleared when
-- the key is placed anew.
local RUN_OUTCOME = {'error', 'error_type', 'error_message', 'result', 'result_codec',
                     'result_signature', 'result_error', 'result_refused', 'revoked',
                     'progress_current', 'progress_total', 'progress_message'}

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- Put one task on the ready stream (due now) or park it in the queue (future).
-- `fresh`: the key has no run record yet (nothing of an earlier run to clear).
local function place(stream, queue, run, parked, key, when, now, fields, fresh)
  if not fresh then
    redis.call('DEL', parked)
    redis.call('HDEL', run, 'message', 'worker', 'started', 'finished', 'unknown-since',
               'restored', 'deliveries', 'delivered_to', unpack(RUN_OUTCOME))
    redis.call('PERSIST', run)
  end
  local task, attempt = field(fields, 'function') or '', field(fields, 'attempt') or '1'
  if tonumber(when) <= tonumber(now) then
    local id = redis.call('XADD', stream, '*', unpack(fields))
    redis.call('HSET', run, 'function', task, 'attempt', attempt, 'when', when,
               'state', 'queued', 'message', id)
    return id
  end
  redis.call('HSET', parked, unpack(fields))
  redis.call('ZADD', queue, when, key)
  redis.call('HSET', run, 'function', task, 'attempt', attempt, 'when', when,
             'state', 'scheduled')
  return false
end

-- Is the stream entry `id` delivered to some worker and not yet acknowledged?
local function pending_owner(stream, group, id)
  local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
  if not ok or #entries == 0 then return false end
  return entries[1][2]
end

-- Move the parked task `key` from the queue to the stream now; false if not parked.
local function move_now(stream, queue, run, parked, key)
  local fields = redis.call('HGETALL', parked)
  redis.call('ZREM', queue, key)
  redis.call('DEL', parked)
  if #fields == 0 then return false end
  local id = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('HSET', run, 'state', 'queued', 'message', id)
  return id
end

-- A concurrency slot freed: make the longest waiter that is still parked due now (the
-- scheduler moves it; its keys are not known to the caller). True if one was woken.
local function wake_one(queue, waiting, now)
  while true do
    local first = redis.call('ZRANGE', waiting, 0, 0)
    if #first == 0 then return false end
    redis.call('ZREM', waiting, first[1])
    if redis.call('ZSCORE', queue, first[1]) then
      redis.call('ZADD', queue, 'XX', now, first[1])
      return true
    end
  end
end
"""

_SCHEDULE_ONE = r"""
-- Does the run `holder` (a stream id; '' outside of a run) hold the key of `run` now?
local function holds(run, state, holder)
  if holder == '' or (state ~= 'running' and state ~= 'queued') then return false end
  return redis.call('HGET', run, 'message') == holder
end

-- Add (or, mode 'replace', swap) one task; returns its state and its stream id if queued.
-- From inside the run that holds the key, the task is kept as that run's successor and
-- placed when the run ends (COMPLETE): a chain never overlaps itself.
local function schedule_one(stream, queue, run, parked, successor, key, when, now, mode,
                            group, holder, fields)
  local state = redis.call('HGET', run, 'state')
  if holds(run, state, holder) then
    if mode == 'add' and redis.call('HEXISTS', run, 'successor') == 1 then
      return 'exists', 'successor'
    end
    redis.call('DEL', successor)
    redis.call('HSET', successor, unpack(fields))
    redis.call('HSET', run, 'successor', mode)
    return 'successor', ''
  end
  if mode == 'add' then
    if state == 'scheduled' or state == 'queued' or state == 'running' then
      return 'exists', state
    end
  else
    if state == 'running' then return 'exists', state end
    if state == 'queued' then
      local id = redis.call('HGET', run, 'message')
      if id then
        if pending_owner(stream, group, id) then return 'exists', 'running' end
        redis.call('XDEL', stream, id)
      end
    elseif state == 'scheduled' then
      redis.call('ZREM', queue, key)
    end
  end
  local id = place(stream, queue, run, parked, key, when, now, fields, not state)
  if id then return 'queued', id end
  return 'scheduled', ''
end
"""

# KEYS: stream, queue, run, parked, successor
# ARGV: key, when_ms, now_ms, mode ('add' | 'replace'), group, holder (the stream id of
#       the run scheduling it, or ''), fields...
# Returns {state, detail}: {'queued', id}, {'scheduled', ''}, {'successor', ''} or
# {'exists', current state}
SCHEDULE = (
    _PRELUDE
    + _SCHEDULE_ONE
    + r"""
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local state, detail = schedule_one(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1],
                                   ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], fields)
return {state, detail}
"""
)

# Many adds in one call (a batch): one script call costs Redis far more than the few
# writes of one add, so a batch pays it once per group of tasks.
# KEYS: stream, queue, then run, parked and successor of each task
# ARGV: now_ms, mode, group, then per task: key, when_ms, holder, number of fields,
#       fields...
# Returns the flat {state, detail, state, detail, ...} of the tasks, in order.
SCHEDULE_MANY = (
    _PRELUDE
    + _SCHEDULE_ONE
    + r"""
local now, mode, group = ARGV[1], ARGV[2], ARGV[3]
local replies = {}
local at = 4
for k = 3, #KEYS, 3 do
  local key, when, holder = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local count = tonumber(ARGV[at + 3])
  local fields = {}
  for i = at + 4, at + 3 + count do fields[#fields + 1] = ARGV[i] end
  at = at + 4 + count
  local state, detail = schedule_one(KEYS[1], KEYS[2], KEYS[k], KEYS[k + 1], KEYS[k + 2],
                                     key, when, now, mode, group, holder, fields)
  replies[#replies + 1] = state
  replies[#replies + 1] = detail
end
return replies
"""
)

# KEYS: queue, run, parked, successor
# ARGV: key, holder (the stream id of the run cancelling it, or '')
# Removes a future task, or, from inside the run holding the key, the successor it
# scheduled. Returns 1 when something was removed.
CANCEL = r"""
local state = redis.call('HGET', KEYS[2], 'state')
if ARGV[2] ~= '' and (state == 'running' or state == 'queued')
    and redis.call('HGET', KEYS[2], 'message') == ARGV[2] then
  redis.call('DEL', KEYS[4])
  return redis.call('HDEL', KEYS[2], 'successor')
end
if state ~= 'scheduled' then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3], KEYS[2], KEYS[4])
return 1
"""

# KEYS: queue, stream, then the run and parked keys of each candidate
# ARGV: now_ms, then the candidates' task keys (read due beforehand: a script declares
#       every key it touches, so that it runs on a cluster)
# Moves the candidates still due; returns {moved, score of the next future task or -1}
MOVE_DUE = (
    _PRELUDE
    + r"""
local queue, stream, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do
  local key = ARGV[i]
  local score = redis.call('ZSCORE', queue, key)
  if score and tonumber(score) <= now then
    move_now(stream, queue, KEYS[2 * i - 1], KEYS[2 * i], key)
    moved = moved + 1
  end
end
local next = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #next == 0 then return {moved, -1} end
return {moved, next[2]}
"""
)

# KEYS: stream, then the run key of each message a worker just received
# ARGV: group, consumer, now_ms, instance (the worker run), alone ('1' when the worker
#       runs nothing now), suspect after (unsettled deliveries), then the message ids
#       (in the order of the run keys), then the events channel of each (a channel)
# Before a worker starts the messages it received, confirm each is still its own and
# restart its claim clock (XCLAIM JUSTID: no delivery count), and count the delivery to
# this worker run (see deliveries.py). A reply that reached the worker late (Redis
# stalled, a slow network) may concern a message another worker has reclaimed
# meanwhile: such messages are returned, and must not run here.
# A suspect (delivered that often before, last to a worker run that did not settle it;
# see deliveries.py) is taken only
# alone: when the worker runs nothing and takes nothing else in this call; the messages
# it cannot take now are deferred (left pending to it, uncounted). A message whose run
# was revoked (cancelled while a worker held it) is returned apart, uncounted: the
# worker settles it as cancelled (COMPLETE) without running it, whoever claimed it.
# Returns {lost ids, delivery count of each message (0 unless taken), deferred ids, the
# id of the suspect taken (or ''), revoked ids}.
START = (
    _PRELUDE
    + DELIVERIES
    + r"""
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now, instance, alone = ARGV[3], ARGV[4], ARGV[5] == '1'
local after = tonumber(ARGV[6])
local lost, counts, deferred, revoked = {}, {}, {}, {}
local taken, isolated = 0, false
local alone_id = ''
local n = #KEYS - 1
for i = 2, #KEYS do
  local id, run = ARGV[5 + i], KEYS[i]
  counts[#counts + 1] = 0
  if pending_owner(stream, group, id) ~= consumer then
    lost[#lost + 1] = id
  elseif redis.call('HEXISTS', run, 'revoked') == 1 then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    revoked[#revoked + 1] = id
  else
    local wary = suspect(run, id, instance, after)
    if isolated or (wary and (not alone or taken > 0)) then
      deferred[#deferred + 1] = id
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
      counts[#counts] = take(stream, group, run, id, instance, consumer, now)
      taken = taken + 1
      isolated = wary
      if wary then alone_id = id end
      local channel = ARGV[5 + i + n]
      if channel then redis.call('PUBLISH', channel, 'running') end
    end
  end
end
return {lost, counts, deferred, alone_id, revoked}
"""
)


# KEYS: stream, queue, failed, then per message: run key, parked key, successor key,
#       dead-letter key, and a (slot, waiting) key pair per concurrency slot it holds
# ARGV: group, consumer, now_ms, ttl_s, dead-letter ttl_ms, dead-letter limit,
#       then per message: message id, outcome, key, when_ms, field count, fields...,
#       slot count, dead-letter field count, dead-letter fields..., record field count,
#       record fields... (the result or error kept in the run record when it ends), and
#       the run's events channel (a channel, not a key)
# outcome: a final state ('completed', 'failed', 'stricken', ...), 'reschedule' (place
# the fields anew: the next run of a perpetual task), 'retry' (the same, for the next
# attempt), or 'drop' (no run record). A successor the run scheduled for its own key is
# placed once the outcome is, as the add or replace it was; a retry discards it (the
# retried run schedules it again). Dead-letter fields, when given, are kept in
# '{name}:dead:{key}' and indexed in 'failed' (bounded, expiring). A freed concurrency
# slot makes its longest waiter due now, for the scheduler to move. A run revoked while
# it ran (cancelled) places nothing after it: no retry, next perpetual run or successor
# (a retry or next run ends as 'cancelled'). Watchers hear of every outcome.
# Returns {results, trimmed}: per message 1 settled, 3 settled and a waiter woken, 2 not
# pending any more (already settled: a retried call), 0 claimed by another consumer
# (fencing: this worker must not touch its state); then the keys of the oldest dead
# letters dropped from 'failed' past the limit (their hashes: DROP_DEAD).
# A message Redis lost while this worker ran it (restarted empty) is settled when the
# worker restored its run record ('restored' holds the message id; see continuity.py).
COMPLETE = (
    _PRELUDE
    + _SCHEDULE_ONE
    + r"""
local stream, queue, failed = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])
local dead_ttl, dead_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local results, trimmed = {}, {}
local k, a = 4, 7
while a <= #ARGV do
  local run, parked, successor, letter = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, outcome, key, when = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local count = tonumber(ARGV[a + 4])
  local fields = {}
  for i = 1, count do fields[i] = ARGV[a + 4 + i] end
  local slots = tonumber(ARGV[a + 5 + count])
  local dead_count = tonumber(ARGV[a + 6 + count])
  local dead = {}
  for i = 1, dead_count do dead[i] = ARGV[a + 6 + count + i] end
  local record_at = a + 7 + count + dead_count
  local record_count = tonumber(ARGV[record_at])
  local channel = ARGV[record_at + 1 + record_count]
  local first_slot = k + 4
  k, a = k + 4 + 2 * slots, record_at + 2 + record_count

  local owner = pending_owner(stream, group, id)
  -- after Redis lost its data, the run record this worker restored stands for the claim
  local restored = not owner and redis.call('HGET', run, 'restored') == id
      and redis.call('HGET', run, 'worker') == consumer
  if owner ~= consumer and not restored then
    if owner then results[#results + 1] = 0 else results[#results + 1] = 2 end
  else
    local woke = false
    if dead_count > 0 then
      redis.call('DEL', letter)
      redis.call('HSET', letter, unpack(dead))
      redis.call('PEXPIRE', letter, dead_ttl)
      redis.call('ZADD', failed, now, key)
      redis.call('ZREMRANGEBYSCORE', failed, '-inf', tonumber(now) - dead_ttl)
      redis.call('PEXPIRE', failed, dead_ttl)
      local excess = redis.call('ZCARD', failed) - dead_limit
      if excess > 0 then
        for _, old in ipairs(redis.call('ZRANGE', failed, 0, excess - 1)) do
          trimmed[#trimmed + 1] = old
        end
        redis.call('ZREMRANGEBYRANK', failed, 0, excess - 1)
      end
    end
    if owner then
      redis.call('XACK', stream, group, id)
      redis.call('XDEL', stream, id)
    end
    for s = 0, slots - 1 do
      local slot, waiting = KEYS[first_slot + 2 * s], KEYS[first_slot + 2 * s + 1]
      redis.call('ZREM', slot, key)
      woke = wake_one(queue, waiting, now) or woke
    end
    local marks = redis.call('HMGET', run, 'successor', 'revoked')
    local next_mode = marks[1]
    if next_mode then redis.call('HDEL', run, 'successor') end
    if marks[2] or outcome == 'cancelled' then
      if outcome == 'reschedule' or outcome == 'retry' then outcome = 'cancelled' end
      next_mode = false
    end
    if outcome == 'reschedule' or outcome == 'retry' then
      place(stream, queue, run, parked, key, when, now, fields, false)
    elseif outcome ~= 'drop' then
      if ttl > 0 then
        redis.call('HDEL', run, 'message', 'restored', 'revoked')
        redis.call('HSET', run, 'state', outcome, 'finished', now)
        if record_count > 0 then
          redis.call('HSET', run, unpack(ARGV, record_at + 1, record_at + record_count))
        end
        redis.call('EXPIRE', run, ttl)
      else
        redis.call('DEL', run)
      end
    end
    redis.call('PUBLISH', channel, outcome)
    if next_mode then
      local next_fields = redis.call('HGETALL', successor)
      redis.call('DEL', successor)
      if outcome ~= 'retry' and #next_fields > 0 then
        schedule_one(stream, queue, run, parked, successor, key, field(next_fields, 'when'),
                     now, next_mode, group, '', next_fields)
      end
    end
    if woke then results[#results + 1] = 3 else results[#results + 1] = 1 end
  end
end
return {results, trimmed}
"""
)

# KEYS: stream, run, successor
# ARGV: group, message id, outcome, now_ms, ttl_s
# The last resort when COMPLETE refused a message: acknowledge it and record the outcome
# (a script rather than MULTI: one step on a cluster too, whatever the client library).
ABANDON = r"""
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], 'message', 'successor')
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'finished', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS: failed, then the dead-letter key of each task key in ARGV
# Deletes the dead letters of tasks no longer listed in 'failed' (trimmed past the limit);
# one re-listed meanwhile is kept.
DROP_DEAD = r"""
for i = 1, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then redis.call('DEL', KEYS[i + 1]) end
end
return 0
"""

# KEYS: stream, queue, run, parked, then a (slot, waiting) key pair per limit
# ARGV: group, consumer, message id, key, now_ms, lease_ms, instance, limit count,
#       max per limit..., fields of the message...
# Takes a slot in every pool, all or none. Returns {1} when taken; {0, i} when pool i is
# full: the message is then acknowledged and parked in the queue until the earliest
# holder's lease runs out, and listed as a waiter woken as soon as a slot frees;
# {-1} when the message is no longer this consumer's; {-2} when its run was revoked
# (cancelled: the worker settles it as such, without running it).
ACQUIRE = (
    _PRELUDE
    + DELIVERIES
    + r"""
local stream, queue, run, parked = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, id, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, lease, instance = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local count = tonumber(ARGV[8])
if pending_owner(stream, group, id) ~= consumer then return {-1} end
if redis.call('HEXISTS', run, 'revoked') == 1 then return {-2} end

for i = 1, count do
  local slot = KEYS[3 + 2 * i]
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now)
  if not redis.call('ZSCORE', slot, key) then
    if redis.call('ZCARD', slot) >= tonumber(ARGV[8 + i]) then
      local waiting = KEYS[4 + 2 * i]
      local earliest = redis.call('ZRANGE', slot, 0, 0, 'WITHSCORES')
      local fields = {}
      for j = 9 + count, #ARGV do fields[#fields + 1] = ARGV[j] end
      redis.call('XACK', stream, group, id)
      redis.call('XDEL', stream, id)
      -- parked, not run: the message's earlier deliveries still count, this one not
      local seen = redis.call('HMGET', run, 'delivered_to', 'deliveries')
      place(stream, queue, run, parked, key, tonumber(earliest[2]) + 1, now, fields, false)
      local deliveries = handed_back(seen, instance)
      if deliveries > 0 then redis.call('HSET', run, 'deliveries', deliveries) end
      redis.call('ZADD', waiting, 'NX', now, key)
      redis.call('PEXPIRE', waiting, lease * 2)
      return {0, i}
    end
  end
end
for i = 1, count do
  local slot = KEYS[3 + 2 * i]
  redis.call('ZADD', slot, now + lease, key)
  redis.call('PEXPIRE', slot, lease * 2)
end
return {1}
"""
)

# KEYS: stream, then the slot keys held by each message in turn
# ARGV: group, consumer, now_ms, lease_ms, then per message: message id, key, slot count
# Resets the idle time of the messages this consumer still owns and extends the leases of
# their concurrency slots; returns the ids another consumer has claimed (a message no
# longer pending at all has just been acknowledged: it is not lost).
RENEW = r"""
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local lost = {}
local k, a = 2, 5
while a <= #ARGV do
  local id, key, slots = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
  if not ok or #entries == 0 then
    -- not pending: acknowledged meanwhile (the task is finishing), nothing to renew
  elseif entries[1][2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    for s = 0, slots - 1 do
      redis.call('ZADD', KEYS[k + s], 'XX', now + lease, key)
      redis.call('PEXPIRE', KEYS[k + s], lease * 2)
    end
  else
    lost[#lost + 1] = id
  end
  k, a = k + slots, a + 3
end
return lost
"""

# KEYS: stream, then the run key of each message
# ARGV: group, consumer, instance (the worker run), then per message: its id and its
#       task key (read beforehand)
# Hands messages this consumer received but will not run back to the stream at once,
# instead of leaving them to wait out the redelivery timeout (their delivery to this
# worker run no longer counts).
RELEASE = (
    _PRELUDE
    + DELIVERIES
    + r"""
local stream, group, consumer, instance = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local released = 0
for i = 2, #KEYS do
  local id, expected, run = ARGV[2 * i], ARGV[2 * i + 1], KEYS[i]
  if pending_owner(stream, group, id) == consumer then
    local entries = redis.call('XRANGE', stream, id, id)
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    if #entries > 0 then
      local fields = entries[1][2]
      local new_id = redis.call('XADD', stream, '*', unpack(fields))
      local key = field(fields, 'key')
      if key and key == expected then
        if redis.call('EXISTS', run) == 1 then
          local seen = redis.call('HMGET', run, 'delivered_to', 'deliveries')
          redis.call('HDEL', run, 'worker', 'started', 'delivered_to')
          redis.call('HSET', run, 'state', 'queued', 'message', new_id,
                     'deliveries', handed_back(seen, instance))
        end
      end
    end
    released = released + 1
  end
end
return released
"""
)

# KEYS: strikes in effect (hash), strike feed (stream)
# ARGV: action ('strike' | 'restore'), feed length, strike encodings...
# Puts strikes in effect or removes them, appending one feed entry per actual change; a
# strike in effect maps to the id of the feed entry that struck it (when, and in what
# order: ids only grow). A strike already in effect keeps its id. Returns how many changed.
STRIKE = r"""
local state, feed = KEYS[1], KEYS[2]
local action, length = ARGV[1], ARGV[2]
local changed = 0
for i = 3, #ARGV do
  local strike = ARGV[i]
  local change
  if action == 'strike' then
    change = redis.call('HEXISTS', state, strike) == 0
  else
    change = redis.call('HDEL', state, strike) == 1
  end
  if change then
    local id = redis.call('XADD', feed, 'MAXLEN', '~', length, '*',
                          'action', action, 'strike', strike)
    if action == 'strike' then redis.call('HSET', state, strike, id) end
    changed = changed + 1
  end
end
return changed
"""

# KEYS: strikes in effect (hash), strike feed (stream)
# Returns {id of the last feed entry or '0-0', flat HGETALL of the strikes}: the state and
# the feed position it corresponds to, read in one step (a script rather than MULTI, so
# that users without the transaction commands can run it).
STRIKES_SNAPSHOT = r"""
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, redis.call('HGETALL', KEYS[1])}
"""


# KEYS: stream, queue, then the run key of each task key in ARGV
# ARGV: 1 to list the queued keys with their task names (else only count), then the
#       queued task keys (read beforehand)
# Returns {entries on the stream, queue}: the queue as {} or {'', ''} (empty or not), or
# as a flat list of key, task name pairs; {-1} when the queue is no longer exactly the
# keys given (the caller reads it again).
PENDING_WORK = r"""
local stream, queue = KEYS[1], KEYS[2]
local ready = redis.call('XLEN', stream)
if ARGV[1] ~= '1' then
  if redis.call('ZCARD', queue) > 0 then return {ready, {'', ''}} end
  return {ready, {}}
end
if redis.call('ZCARD', queue) ~= #ARGV - 1 then return {-1} end
local waiting = {}
for i = 2, #ARGV do
  if not redis.call('ZSCORE', queue, ARGV[i]) then return {-1} end
  waiting[#waiting + 1] = ARGV[i]
  waiting[#waiting + 1] = redis.call('HGET', KEYS[i + 1], 'function') or ''
end
return {ready, waiting}
"""


class Scripts:
    """The scripts above, registered on one client (EVALSHA, reloaded after NOSCRIPT)."""

    def __init__(self, client: Redis) -> None:
        self.schedule = client.register_script(SCHEDULE)
        self.schedule_many = client.register_script(SCHEDULE_MANY)
        self.cancel = client.register_script(CANCEL)
        self.move_due = client.register_script(MOVE_DUE)
        self.start = client.register_script(START)
        self.complete = client.register_script(COMPLETE)
        self.acquire = client.register_script(ACQUIRE)
        self.pending_work = client.register_script(PENDING_WORK)
        self.renew = client.register_script(RENEW)
        self.release = client.register_script(RELEASE)
        self.drop_dead = client.register_script(DROP_DEAD)
        self.abandon = client.register_script(ABANDON)
        self.strike = client.register_script(STRIKE)
        self.strikes_snapshot = client.register_script(STRIKES_SNAPSHOT)


def outcome_pairs(flat: Sequence[Any]) -> list[Any]:
    """``[[state, detail], ...]`` from SCHEDULE_MANY's flat reply."""
    return [list(flat[i : i + 2]) for i in range(0, len(flat), 2)]


async def call(script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run ``script`` (a small wrapper that keeps the call sites typed)."""
    return await script(keys=list(keys), args=list(args))
