-- KEYS: queue, stream, then the run and parked keys of each candidate
-- ARGV: now_ms, then the candidates' task keys (read due beforehand: a script declares
--       every key it touches, so that it runs on a cluster)
-- Moves the candidates still due; returns {moved, score of the next future task or -1}
local queue, stream, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do
  local key = ARGV[i]
  local score = redis.call('ZSCORE', queue, key)
  if score and tonumber(score) <= now then
    move_now(stream, queue, KEYS[2 * i - 1], KEYS[2 * i], key)
    moved = moved + 1
  end
end
local next = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
if #next == 0 then return {moved, -1} end
return {moved, next[2]}
