-- KEYS: stream, then the run key of each message
-- ARGV: group, consumer, instance (the worker run), then per message: its id and its
--       task key (read beforehand)
-- Hands messages this consumer received but will not run back to the stream at once,
-- instead of leaving them to wait out the redelivery timeout (their delivery to this
-- worker run no longer counts).
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
