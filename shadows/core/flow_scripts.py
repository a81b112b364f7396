"""The Lua scripts of flow control: the worker's gate (cooldown and rate limits) and the
producer's debounce. Each runs as one atomic step and names every key it touches."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from shadows.core.scripts import _PRELUDE

# KEYS: stream, then the cooldown key (when there is one), then per rate limit: its
#       starts and its waiting runs
# ARGV: group, consumer, message id, task key, first (1 for a first attempt, else 0),
#       cooldown window ms (0: no cooldown), limit count, then per limit: limit, per ms,
#       drop (1 or 0)
# Before a run starts: is the message still this consumer's, does a cooldown drop it, do
# the rate limits have room? Only when every check passes is the start recorded (the
# cooldown opened, one entry per rate limit), all at once, at Redis's clock. A run over
# a limit without drop is postponed to its own slot: the first moment when it, after the
# runs already waiting, keeps every window within the limit; it is listed as waiting
# there, so that the runs postponed together come back one slot apart rather than all at
# the first free moment. A run coming back is checked against the starts alone (and,
# should the runs before it have started late, postponed again only until the window
# has room); a new one also lets the waiting runs go first.
# Returns {-1} when the message is no longer this consumer's, {0, ms left} when a
# cooldown drops it, {1, postponed to (0 when dropped), full flag per limit} when a rate
# limit is full, {2} when it may start. A redelivered message is recognised by its id:
# it passes what it passed before.
THROTTLE = (
    _PRELUDE
    + r"""
local function slot(starts, waits, limit, per, now)
  if redis.call('ZCARD', starts) + redis.call('ZCARD', waits) < limit then return now end
  local scores = {}
  for _, source in ipairs({starts, waits}) do
    local top = redis.call('ZRANGE', source, -limit, -1, 'WITHSCORES')
    for j = 2, #top, 2 do scores[#scores + 1] = tonumber(top[j]) end
  end
  if #scores < limit then return now end
  table.sort(scores)
  local t = scores[#scores - limit + 1] + per
  if scores[#scores] > t then t = scores[#scores] end
  if now > t then t = now end
  return t
end

local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local key, first = ARGV[4], ARGV[5] == '1'
local window, count = tonumber(ARGV[6]), tonumber(ARGV[7])
if pending_owner(stream, group, id) ~= consumer then return {-1} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local at = 2
local cooldown = nil
if window > 0 then
  cooldown = KEYS[2]
  at = 3
end
local limits = {}
local returning = false
for i = 1, count do
  local starts, waits = KEYS[at + 2 * i - 2], KEYS[at + 2 * i - 1]
  local limit, per = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  local drop = ARGV[7 + 3 * i] == '1'
  redis.call('ZREMRANGEBYSCORE', starts, '-inf', now - per)
  redis.call('ZREMRANGEBYSCORE', waits, '-inf', now - per)
  if redis.call('ZREM', waits, key) == 1 then returning = true end
  limits[i] = {starts = starts, waits = waits, limit = limit, per = per, drop = drop}
end
if cooldown and first then
  local holder = redis.call('GET', cooldown)
  if holder and holder ~= id then
    return {0, redis.call('PTTL', cooldown)}
  end
end
local full, dropping, until_ = false, false, 0
local flags = {}
for i, l in ipairs(limits) do
  flags[i] = 0
  if not redis.call('ZSCORE', l.starts, id) then
    local free = now
    if returning then
      local counted = redis.call('ZCARD', l.starts)
      if counted >= l.limit then
        local oldest = redis.call('ZRANGE', l.starts, counted - l.limit, counted - l.limit,
                                  'WITHSCORES')
        free = tonumber(oldest[2]) + l.per
      end
    else
      free = slot(l.starts, l.waits, l.limit, l.per, now)
    end
    if free > now then
      flags[i] = 1
      full = true
      if l.drop then dropping = true end
      if free > until_ then until_ = free end
    end
  end
end
if full then
  if dropping then
    until_ = 0
  else
    for _, l in ipairs(limits) do
      redis.call('ZADD', l.waits, until_, key)
      redis.call('PEXPIRE', l.waits, until_ - now + l.per)
    end
  end
  local reply = {1, until_}
  for i = 1, count do reply[i + 2] = flags[i] end
  return reply
end
if cooldown and first and not redis.call('GET', cooldown) then
  redis.call('SET', cooldown, id, 'PX', window)
end
for _, l in ipairs(limits) do
  redis.call('ZADD', l.starts, 'NX', now, id)
  redis.call('PEXPIRE', l.starts, l.per)
end
return {2}
"""
)

# KEYS: stream, queue, debounce hash, run and parked keys of the burst the caller believes
#       open, run and parked keys of a new burst
# ARGV: expected burst key ('' for none), new burst key, now ms, settle ms, max wait ms
#       (-1: none), keep ('last' | 'first'), fields of the submission...
# A submission joins the open burst (its run still waits in the queue): the run moves to
# `settle` from now, capped at `max_wait` after the burst's first submission, and with
# keep 'last' takes this submission's arguments. Otherwise it opens a new burst under the
# new key, due `settle` from now. Returns {'stale', open burst key} when the caller's
# idea of the open burst is out of date (it calls again with that key), else {'joined' or
# 'opened', the run's key, its due time}. A burst open under the new key is this very
# submission's, from an earlier call whose reply was lost (a timeout, a failover) and that
# the client sent again: it is answered as opened, not placed a second time.
DEBOUNCE = (
    _PRELUDE
    + r"""
local stream, queue, state = KEYS[1], KEYS[2], KEYS[3]
local expected, fresh, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local settle, max_wait, keep = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local function with(key, due)
  for i = 1, #fields, 2 do
    if fields[i] == 'key' then fields[i + 1] = key end
    if fields[i] == 'when' then fields[i + 1] = tostring(due) end
  end
  return fields
end
local open = redis.call('HGET', state, 'key') or ''
if open == fresh then
  return {'opened', fresh, tonumber(redis.call('HGET', KEYS[6], 'when') or now)}
end
if open ~= expected then return {'stale', open} end
local lifetime = settle * 2 + 60000
if max_wait >= 0 then lifetime = lifetime + max_wait end
if open ~= '' and redis.call('ZSCORE', queue, open)
    and redis.call('HGET', KEYS[4], 'state') == 'scheduled' then
  local due = now + settle
  local first = tonumber(redis.call('HGET', state, 'first'))
  if max_wait >= 0 and first + max_wait < due then due = first + max_wait end
  if keep == 'last' then
    redis.call('DEL', KEYS[5])
    redis.call('HSET', KEYS[5], unpack(with(open, due)))
  else
    redis.call('HSET', KEYS[5], 'when', tostring(due))
  end
  redis.call('ZADD', queue, due, open)
  redis.call('HSET', KEYS[4], 'when', due)
  redis.call('HINCRBY', state, 'joined', 1)
  redis.call('PEXPIRE', state, lifetime)
  return {'joined', open, due}
end
local due = now + settle
if max_wait >= 0 and max_wait < settle then due = now + max_wait end
place(stream, queue, KEYS[6], KEYS[7], fresh, due, now, with(fresh, due), true)
redis.call('DEL', state)
redis.call('HSET', state, 'key', fresh, 'first', now, 'joined', 0)
redis.call('PEXPIRE', state, lifetime)
return {'opened', fresh, due}
"""
)


class FlowScripts:
    """The scripts above, registered on one client (EVALSHA, reloaded after NOSCRIPT)."""

    __slots__ = ("debounce", "gates", "throttle")

    def __init__(self, client: Redis) -> None:
        self.throttle = client.register_script(THROTTLE)
        self.debounce = client.register_script(DEBOUNCE)
        #: The worker's batcher of THROTTLE calls on this client (see ``worker.throttle``).
        self.gates: Any = None
