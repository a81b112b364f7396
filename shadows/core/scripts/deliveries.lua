-- Lua helpers, prepended to the scripts that hand out or hand back messages.
-- The fields of a run record that START reads once per message: what take and suspect
-- look at, the revocation, and whether anyone watches the run (see execution state).
local SEEN = {'message', 'delivered_to', 'deliveries', 'revoked', 'watched'}

-- Mark the run of message `id` as running on `consumer` and count the delivery to the
-- worker run `instance` once; returns the count. `seen`: the record's SEEN fields. A run
-- record that does not know the message (none, or of another message) leaves the count
-- to Redis (XPENDING).
local function take(stream, group, run, seen, id, instance, consumer, now)
  if seen[1] ~= id then
    if redis.call('EXISTS', run) == 1 then
      redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now)
    end
    local ok, entries = pcall(redis.call, 'XPENDING', stream, group, id, id, 1)
    if ok and #entries > 0 then return tonumber(entries[1][4]) end
    return 1
  end
  local count = seen[3] and tonumber(seen[3]) or 0
  if seen[2] ~= instance then count = count + 1 end
  redis.call('HSET', run, 'state', 'running', 'worker', consumer, 'started', now,
             'delivered_to', instance, 'deliveries', count)
  return count
end

-- Was message `id` delivered at least `after` times before, last to another worker run
-- that did not settle it (its worker died, or lost it)? Such a *suspect* runs alone.
-- `seen`: the record's SEEN fields.
local function suspect(seen, id, instance, after)
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
