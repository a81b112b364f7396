-- KEYS: stream, queue, failed, then per message: run key, parked key, successor key,
--       dead-letter key, and a (slot, waiting) key pair per concurrency slot it holds
-- ARGV: group, consumer, now_ms, ttl_s, dead-letter ttl_ms, dead-letter limit,
--       then per message: message id, outcome, key, when_ms, field count, fields...,
--       slot count, dead-letter field count, dead-letter fields..., record field count,
--       record fields... (the result or error kept in the run record when it ends)
-- outcome: a final state ('completed', 'failed', 'stricken', ...), 'reschedule' (place
-- the fields anew: the next run of a perpetual task), 'retry' (the same, for the next
-- attempt), or 'drop' (no run record). A successor the run scheduled for its own key is
-- placed once the outcome is, as the add or replace it was; a retry discards it (the
-- retried run schedules it again). Dead-letter fields, when given, are kept in
-- '{name}:dead:{key}' and indexed in 'failed' (bounded, expiring). A freed concurrency
-- slot makes its longest waiter due now, for the scheduler to move. A run revoked while
-- it ran (cancelled) places nothing after it: no retry, next perpetual run or successor
-- (a retry or next run ends as 'cancelled'). Watchers hear of every outcome (a run is
-- announced only while its record is marked 'watched', a mark its end clears).
-- One ownership look-up, one XACK and one XDEL serve the whole batch.
-- Returns {results, trimmed}: per message 1 settled, 3 settled and a waiter woken, 2 not
-- pending any more (already settled: a retried call), 0 claimed by another consumer
-- (fencing: this worker must not touch its state); then the keys of the oldest dead
-- letters dropped from 'failed' past the limit (their hashes: DROP_DEAD).
-- A message Redis lost while this worker ran it (restarted empty) is settled when the
-- worker restored its run record ('restored' holds the message id; see continuity.py).
local stream, queue, failed = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])
local dead_ttl, dead_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local results, trimmed, settled = {}, {}, {}
-- One ownership look-up for the batch: the message ids first, and where each message's
-- arguments are (read once: tonumber is a strtod in Redis's Lua)
local ids, starts, counts, dead_counts, record_counts = {}, {}, {}, {}, {}
local function count_at(i)
  local text = ARGV[i]
  if text == '0' then return 0 end
  return tonumber(text)
end
local a = 7
while a <= #ARGV do
  local m = #ids + 1
  ids[m], starts[m] = ARGV[a], a
  local count = count_at(a + 4)
  local dead_count = count_at(a + 6 + count)
  local record_count = count_at(a + 7 + count + dead_count)
  counts[m], dead_counts[m], record_counts[m] = count, dead_count, record_count
  a = a + 8 + count + dead_count + record_count
end
local held = held_by(stream, group, consumer, ids)
local done = {}
local NONE = {} -- the fields of a message without any (read only)
local k = 4
for m = 1, #ids do
  a = starts[m]
  local run, parked, successor, letter = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, outcome, key, when = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local count = counts[m]
  local fields = NONE
  if count > 0 then
    fields = {}
    for i = 1, count do fields[i] = ARGV[a + 4 + i] end
  end
  local slots = count_at(a + 5 + count)
  local dead_count = dead_counts[m]
  local dead = NONE
  if dead_count > 0 then
    dead = {}
    for i = 1, dead_count do dead[i] = ARGV[a + 6 + count + i] end
  end
  local record_at = a + 7 + count + dead_count
  local record_count = record_counts[m]
  local first_slot = k + 4
  k = k + 4 + 2 * slots

  local owner = consumer
  if done[id] then
    owner = false -- twice in one call: the first settled it
  elseif not held[id] then
    owner = pending_owner(stream, group, id)
  end
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
    if owner then settled[#settled + 1] = id end
    done[id] = true
    for s = 0, slots - 1 do
      local slot, waiting = KEYS[first_slot + 2 * s], KEYS[first_slot + 2 * s + 1]
      redis.call('ZREM', slot, key)
      woke = wake_one(queue, waiting, now) or woke
    end
    local marks = redis.call('HMGET', run, 'successor', 'revoked', 'watched', 'restored')
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
        -- only the fields there (each one HDEL looks for is a walk of the record)
        if marks[2] or marks[3] or marks[4] then
          local gone = {'message'}
          if marks[2] then gone[#gone + 1] = 'revoked' end
          if marks[3] then gone[#gone + 1] = 'watched' end
          if marks[4] then gone[#gone + 1] = 'restored' end
          redis.call('HDEL', run, unpack(gone))
        else
          redis.call('HDEL', run, 'message')
        end
        redis.call('HSET', run, 'state', outcome, 'finished', now,
          unpack(ARGV, record_at + 1, record_at + record_count))
        redis.call('EXPIRE', run, ttl)
      else
        redis.call('DEL', run)
      end
    end
    if marks[3] then redis.pcall('PUBLISH', run .. ':events', outcome) end
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
if #settled > 0 then
  each_ids({'XACK', stream, group}, settled, {})
  each_ids({'XDEL', stream}, settled, {})
end
return {results, trimmed}
