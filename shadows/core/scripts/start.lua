-- KEYS: stream, then the run key of each message a worker just received
-- ARGV: group, consumer, now_ms, instance (the worker run), alone ('1' when the worker
--       runs nothing now), suspect after (unsettled deliveries), then the message ids
--       (in the order of the run keys), then the events channel of each (a channel)
-- Before a worker starts the messages it received, confirm each is still its own and
-- restart its claim clock (XCLAIM JUSTID: no delivery count), and count the delivery to
-- this worker run (see deliveries.py). A reply that reached the worker late (Redis
-- stalled, a slow network) may concern a message another worker has reclaimed
-- meanwhile: such messages are returned, and must not run here.
-- A suspect (delivered that often before, last to a worker run that did not settle it;
-- see deliveries.py) is taken only
-- alone: when the worker runs nothing and takes nothing else in this call; the messages
-- it cannot take now are deferred (left pending to it, uncounted). A message whose run
-- was revoked (cancelled while a worker held it) is returned apart, uncounted: the
-- worker settles it as cancelled (COMPLETE) without running it, whoever claimed it.
-- Returns {lost ids, delivery count of each message (0 unless taken), deferred ids, the
-- id of the suspect taken (or ''), revoked ids}.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now, instance, alone = ARGV[3], ARGV[4], ARGV[5] == '1'
local after = tonumber(ARGV[6])
local lost, counts, deferred, revoked = {}, {}, {}, {}
local taken, isolated = 0, false
local alone_id = ''
local n = #KEYS - 1
for i = 2, #KEYS do
  local id, run = ARGV[5 + i], KEYS[i]
  counts[#counts + 1] = 0
  if pending_owner(stream, group, id) ~= consumer then
    lost[#lost + 1] = id
  elseif redis.call('HEXISTS', run, 'revoked') == 1 then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    revoked[#revoked + 1] = id
  else
    local wary = suspect(run, id, instance, after)
    if isolated or (wary and (not alone or taken > 0)) then
      deferred[#deferred + 1] = id
    else
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
      counts[#counts] = take(stream, group, run, id, instance, consumer, now)
      taken = taken + 1
      isolated = wary
      if wary then alone_id = id end
      local channel = ARGV[5 + i + n]
      if channel then redis.pcall('PUBLISH', channel, 'running') end
    end
  end
end
return {lost, counts, deferred, alone_id, revoked}
