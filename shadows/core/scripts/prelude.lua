-- Shared Lua helpers, prepended to the scripts that place work.
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
