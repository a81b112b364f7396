-- KEYS: stream, then the slot keys held by each message in turn
-- ARGV: group, consumer, now_ms, lease_ms, then per message: message id, key, slot count
-- Resets the idle time of the messages this consumer still owns and extends the leases of
-- their concurrency slots; returns the ids another consumer has claimed (a message no
-- longer pending at all has just been acknowledged: it is not lost).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local lost = {}
local k, a = 2, 5
while a <= #ARGV do
  local id, key, slots = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
  if not ok or #entries == 0 then
    -- not pending: acknowledged meanwhile (the task is finishing), nothing to renew
  elseif entries[1][2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    for s = 0, slots - 1 do
      redis.call('ZADD', KEYS[k + s], 'XX', now + lease, key)
      redis.call('PEXPIRE', KEYS[k + s], lease * 2)
    end
  else
    lost[#lost + 1] = id
  end
  k, a = k + slots, a + 3
end
return lost
