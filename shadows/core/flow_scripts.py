"""The Lua scripts of flow control: the worker's gate (cooldown and rate limits) and the
producer's debounce. Each runs as one atomic step and names every key it touches."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from shadows.core.scripts import _PRELUDE

# KEYS: stream, then the cooldown key (when there is one), then one key per rate limit
# ARGV: group, consumer, message id, first (1 for a first attempt, else 0),
#       cooldown window ms (0: no cooldown), limit count, then per limit: limit, per ms
# Before a run starts: is the message still this consumer's, does a cooldown drop it, do
# the rate limits have room? Only when every check passes are the start recorded (the
# cooldown opened, one entry per rate limit), all at once, at Redis's clock. Returns
# {-1} when the message is no longer this consumer's, {0, ms left} when a cooldown drops
# it, {1, free moment or 0 per limit} when a rate limit is full, {2} when it may start.
# A redelivered message is recognised by its id: it passes what it passed before.
THROTTLE = (
    _PRELUDE
    + r"""
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local first, window, count = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6])
if pending_owner(stream, group, id) ~= consumer then return {-1} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local at = 2
local cooldown = nil
if window > 0 then
  cooldown = KEYS[2]
  at = 3
  if first then
    local holder = redis.call('GET', cooldown)
    if holder and holder ~= id then
      return {0, redis.call('PTTL', cooldown)}
    end
  end
end
local frees = {}
local full = false
for i = 1, count do
  local key = KEYS[at + i - 1]
  local limit, per = tonumber(ARGV[5 + 2 * i]), tonumber(ARGV[6 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - per)
  frees[i] = 0
  if not redis.call('ZSCORE', key, id) then
    local counted = redis.call('ZCARD', key)
    if counted >= limit then
      local oldest = redis.call('ZRANGE', key, counted - limit, counted - limit, 'WITHSCORES')
      frees[i] = tonumber(oldest[2]) + per
      full = true
    end
  end
end
if full then
  local reply = {1}
  for i = 1, count do reply[i + 1] = frees[i] end
  return reply
end
if cooldown and first and not redis.call('GET', cooldown) then
  redis.call('SET', cooldown, id, 'PX', window)
end
for i = 1, count do
  local key, per = KEYS[at + i - 1], tonumber(ARGV[6 + 2 * i])
  redis.call('ZADD', key, 'NX', now, id)
  redis.call('PEXPIRE', key, per)
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
# 'opened', the run's key, its due time}.
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
