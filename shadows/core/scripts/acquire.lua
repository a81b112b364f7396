-- KEYS: stream, queue, run, parked, then a (slot, waiting) key pair per limit
-- ARGV: group, consumer, message id, key, now_ms, lease_ms, instance, limit count,
--       max per limit..., fields of the message...
-- Takes a slot in every pool, all or none. Returns {1} when taken; {0, i} when pool i is
-- full: the message is then acknowledged and parked in the queue until the earliest
-- holder's lease runs out, and listed as a waiter woken as soon as a slot frees;
-- {-1} when the message is no longer this consumer's; {-2} when its run was revoked
-- (cancelled: the worker settles it as such, without running it).
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
