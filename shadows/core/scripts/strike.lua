-- KEYS: strikes in effect (hash), strike feed (stream)
-- ARGV: action ('strike' | 'restore'), feed length, strike encodings...
-- Puts strikes in effect or removes them, appending one feed entry per actual change; a
-- strike in effect maps to the id of the feed entry that struck it (when, and in what
-- order: ids only grow). A strike already in effect keeps its id. Returns how many changed.
local state, feed = KEYS[1], KEYS[2]
local action, length = ARGV[1], ARGV[2]
local changed = 0
for i = 3, #ARGV do
  local strike = ARGV[i]
  local change
  if action == 'strike' then
    change = redis.call('HEXISTS', state, strike) == 0
  else
    change = redis.call('HDEL', state, strike) == 1
  end
  if change then
    local id = redis.call('XADD', feed, 'MAXLEN', '~', length, '*',
                          'action', action, 'strike', strike)
    if action == 'strike' then redis.call('HSET', state, strike, id) end
    changed = changed + 1
  end
end
return changed
