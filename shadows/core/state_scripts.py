"""The Lua scripts of execution state: cancelling (revoking running work) and progress
reports. Each runs as one atomic step; see :mod:`shadows.core.state`."""

from __future__ import annotations

from redis.asyncio import Redis

from shadows.core.scripts import _PRELUDE

# KEYS: queue, run, parked, successor, stream, strike feed (only in the home shard's slot)
# ARGV: key, holder (the stream id of the run cancelling it, or ''), group, now_ms,
#       ttl_s, feed length, the run's events channel
# Cancels the task `key`: a future or undelivered one is removed at once (its state
# 'cancelled', kept for ttl_s); one a worker holds (running, or delivered and not yet
# started) is revoked: a mark in its run record that START, ACQUIRE and COMPLETE check,
# announced on the strike feed so that the worker running it cancels it at once. From
# inside the run holding the key, this removes the successor that run scheduled instead.
# Returns 1 (removed), 2 (revoked: the worker ends it) or 0 (nothing to cancel); 3 when
# revoked without the feed key (a shard's slot): the caller announces it on the feed.
CANCEL = (
    _PRELUDE
    + r"""
local queue, run, parked, successor = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream, feed = KEYS[5], KEYS[6]
local key, holder, group, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, length, channel = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local state = redis.call('HGET', run, 'state')
if holder ~= '' and (state == 'running' or state == 'queued')
    and redis.call('HGET', run, 'message') == holder then
  redis.call('DEL', successor)
  return redis.call('HDEL', run, 'successor')
end
local removed = false
if state == 'scheduled' then
  redis.call('ZREM', queue, key)
  removed = true
elseif state == 'queued' then
  local id = redis.call('HGET', run, 'message')
  if not id or not pending_owner(stream, group, id) then
    if id then redis.call('XDEL', stream, id) end
    removed = true
  end
elseif state ~= 'running' then
  return 0
end
if removed then
  redis.call('DEL', parked, successor)
  redis.call('HDEL', run, 'message', 'successor')
  redis.call('HSET', run, 'state', 'cancelled', 'finished', now)
  if ttl > 0 then redis.call('EXPIRE', run, ttl) else redis.call('DEL', run) end
  redis.pcall('PUBLISH', channel, 'cancelled')
  return 1
end
if redis.call('HEXISTS', run, 'revoked') == 0 then
  redis.call('HSET', run, 'revoked', now)
  if not feed then return 3 end
  redis.call('XADD', feed, 'MAXLEN', '~', length, '*', 'action', 'revoke', 'key', key)
end
return 2
"""
)

# KEYS: run
# ARGV: message id of the run reporting, field, mode ('set' | 'incr'), value, the run's
#       events channel
# A running task's progress report: written only while that run holds the key, then
# announced to watchers. Returns the field's new value (false when not written).
PROGRESS = r"""
if redis.call('HGET', KEYS[1], 'message') ~= ARGV[1] then return false end
local value = ARGV[4]
if ARGV[3] == 'incr' then
  value = redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
end
redis.pcall('PUBLISH', ARGV[5], 'progress')
return value
"""


# KEYS: run
# ARGV: the fields to read
# A watcher asks for this run's changes to be announced: the workers' scripts publish
# them only for a run marked 'watched' (a task nobody watches pays no PUBLISH), then
# reads the record in the same step, so that a change made before the mark is in what it
# reads and one made after is announced. A record that is gone stays gone.
WATCH = r"""
if redis.call('HGET', KEYS[1], 'state') then redis.call('HSET', KEYS[1], 'watched', '1') end
return redis.call('HMGET', KEYS[1], unpack(ARGV))
"""


class StateScripts:
    """The scripts above, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.cancel = client.register_script(CANCEL)
        self.progress = client.register_script(PROGRESS)
