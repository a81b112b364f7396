-- Shared Lua helpers, prepended to the scripts that place work.

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
    -- what the earlier run left: its claim, its outcome, progress, a revocation (a
    -- literal list: a table made at every call of every script would cost each add)
    redis.call('HDEL', run, 'message', 'worker', 'started', 'finished', 'unknown-since',
               'restored', 'deliveries', 'delivered_to', 'error', 'error_type',
               'error_message', 'result', 'result_codec', 'result_signature',
               'result_error', 'result_refused', 'revoked', 'progress_current',
               'progress_total', 'progress_message')
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

-- Is the stream id (ms, seq) before (other_ms, other_seq)? Each part is a decimal number
-- without leading zeros: the shorter is the smaller, and at one length the text decides
-- (tonumber, a strtod in Redis's Lua, cost more than the rest of these scripts' Lua).
local function earlier(ms, seq, other_ms, other_seq)
  if ms ~= other_ms then
    if #ms ~= #other_ms then return #ms < #other_ms end
    return ms < other_ms
  end
  if #seq ~= #other_seq then return #seq < #other_seq end
  return seq < other_seq
end

-- The earliest and the latest of the stream ids `ids` ('ms-seq', compared as numbers,
-- not as text), each split once with a plain find: in every START and COMPLETE.
local function id_range(ids)
  local find, sub = string.find, string.sub
  local low, high, low_ms, low_seq, high_ms, high_seq
  for i, id in ipairs(ids) do
    local dash = find(id, '-', 1, true)
    local ms, seq = sub(id, 1, dash - 1), sub(id, dash + 1)
    if i == 1 or earlier(ms, seq, low_ms, low_seq) then
      low, low_ms, low_seq = id, ms, seq
    end
    if i == 1 or earlier(high_ms, high_seq, ms, seq) then
      high, high_ms, high_seq = id, ms, seq
    end
  end
  return low, high
end

-- The ids among `ids` pending to `consumer` (a set). One XPENDING over their range, of
-- the consumer's own entries, instead of one per id: a batch costs one look-up. When
-- the range holds more of its entries than one call returns, the ids not seen are
-- looked up one by one. An id missing from the set may be another consumer's or not
-- pending at all: ask pending_owner when that matters.
local function held_by(stream, group, consumer, ids)
  local held = {}
  if #ids == 1 then
    if pending_owner(stream, group, ids[1]) == consumer then held[ids[1]] = true end
    return held
  end
  if #ids == 0 then return held end
  local low, high = id_range(ids)
  local limit = 2 * #ids + 100
  local ok, entries = pcall(redis.call, 'XPENDING', stream, group, low, high, limit, consumer)
  if not ok then return held end
  for _, entry in ipairs(entries) do held[entry[1]] = true end
  if #entries >= limit then
    for _, id in ipairs(ids) do
      if not held[id] and pending_owner(stream, group, id) == consumer then held[id] = true end
    end
  end
  return held
end

-- One command over many ids (XACK, XDEL, XCLAIM ... JUSTID): the words of `head`, the
-- ids, the words of `tail`; in chunks (Lua's unpack has a limit).
local function each_ids(head, ids, tail)
  for first = 1, #ids, 1000 do
    local call = {unpack(head)}
    for i = first, math.min(first + 999, #ids) do call[#call + 1] = ids[i] end
    for _, word in ipairs(tail) do call[#call + 1] = word end
    redis.call(unpack(call))
  end
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
