-- KEYS: stream, run, successor
-- ARGV: group, message id, outcome, now_ms, ttl_s
-- The last resort when COMPLETE refused a message: acknowledge it and record the outcome
-- (a script rather than MULTI: one step on a cluster too, whatever the client library).
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], 'message', 'successor')
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'finished', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[3])
return 1
