-- KEYS: queue, run, parked, successor
-- ARGV: key, holder (the stream id of the run cancelling it, or '')
-- Removes a future task, or, from inside the run holding the key, the successor it
-- scheduled. Returns 1 when something was removed.
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
