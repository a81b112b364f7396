-- KEYS: failed, then the dead-letter key of each task key in ARGV
-- Deletes the dead letters of tasks no longer listed in 'failed' (trimmed past the limit);
-- one re-listed meanwhile is kept.
for i = 1, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then redis.call('DEL', KEYS[i + 1]) end
end
return 0
