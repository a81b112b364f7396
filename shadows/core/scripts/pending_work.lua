-- KEYS: stream, queue, then the run key of each task key in ARGV
-- ARGV: 1 to list the queued keys with their task names (else only count), then the
--       queued task keys (read beforehand)
-- Returns {entries on the stream, queue}: the queue as {} or {'', ''} (empty or not), or
-- as a flat list of key, task name pairs; {-1} when the queue is no longer exactly the
-- keys given (the caller reads it again).
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
