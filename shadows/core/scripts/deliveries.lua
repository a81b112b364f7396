-- Lua helpers, prepended to the scripts that hand out or hand back messages.
-- Mark the run of message `id` as running on `consumer` and count the delivery to the
-- worker run `instance` once; returns the count. A run record that does not know the
-- message (none, or of another message) leaves the count to Redis (XPENDING).
local function take(stream, group, run, id, instance, consumer, now)
  local seen = redis.call('HMGET', run, 'message', 'delivered_to', 'deliveries')
  if seen[1] ~= id then
    if redis.call('EXISTS', run) == 1 then
      redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now)
    end
    local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
    if ok and #entries > 0 then return tonumber(entries[1][4]) end
    return 1
  end
  local count = tonumber(seen[3] or '0')
  if seen[2] ~= instance then count = count + 1 end
  redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now,
             'delivered_to', instance, 'deliveries', count)
  return count
end

-- Was message `id` delivered at least `after` times before, last to another worker run
-- that did not settle it (its worker died, or lost it)? Such a *suspect* runs alone.
local function suspect(run, id, instance, after)
  local seen = redis.call('HMGET', run, 'message', 'delivered_to', 'deliveries')
  return seen[1] == id and seen[2] ~= false and seen[2] ~= instance
         and tonumber(seen[3] or '0') >= after
end

-- The deliveries counted for the run of `run` less the one `instance` hands back now
-- (it did not run the message), given the record's {delivered_to, deliveries}.
local function handed_back(seen, instance)
  local count = tonumber(seen[2] or '0')
  if seen[1] == instance and count > 0 then count = count - 1 end
  return count
end
