-- KEYS: strikes in effect (hash), strike feed (stream)
-- Returns {id of the last feed entry or '0-0', flat HGETALL of the strikes}: the state and
-- the feed position it corresponds to, read in one step (a script rather than MULTI, so
-- that users without the transaction commands can run it).
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, redis.call('HGETALL', KEYS[1])}
