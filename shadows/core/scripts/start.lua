-- KEYS: stream, then the run key of each message a worker just received
-- ARGV: group, consumer, now_ms, instance (the worker run), alone ('1' when the worker
--       runs nothing now), suspect after (unsettled deliveries), claim ('1' to restart
--       the claim clock), then the message ids (in the order of the run keys)
-- Before a worker starts the messages it received, confirm each is still its own and,
-- for messages it held a while (claim '1'), restart their claim clock (XCLAIM JUSTID: no
-- delivery count; a message just read has a fresh clock already), and count the delivery to
-- this worker run (see deliveries.py). A reply that reached the worker late (Redis
-- stalled, a slow network) may concern a message another worker has reclaimed
-- meanwhile: such messages are returned, and must not run here.
-- A suspect (delivered that often before, last to a worker run that did not settle it;
-- see deliveries.py) is taken only
-- alone: when the worker runs nothing and takes nothing else in this call; the messages
-- it cannot take now are deferred (left pending to it, uncounted). A message whose run
-- was revoked (cancelled while a worker held it) is returned apart, uncounted: the
-- worker settles it as cancelled (COMPLETE) without running it, whoever claimed it.
-- The batch costs one ownership look-up and at most one claim (held_by, XCLAIM);
-- each message one read of its run record and one write. 'running' is announced only
-- for a run someone watches (its record's 'watched' mark: see core/state.py).
-- Returns {lost ids, delivery count of each message (0 unless taken), deferred ids, the
-- id of the suspect taken (or ''), revoked ids}.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now, instance, alone = ARGV[3], ARGV[4], ARGV[5] == '1'
local after, claim = tonumber(ARGV[6]), ARGV[7] == '1'
local lost, counts, deferred, revoked, claimed = {}, {}, {}, {}, {}
local taken, isolated = 0, false
local alone_id = ''
local n = #KEYS - 1
local ids = {}
for i = 1, n do ids[i] = ARGV[7 + i] end
local held = held_by(stream, group, consumer, ids)
for i = 1, n do
  local id, run = ids[i], KEYS[i + 1]
  counts[i] = 0
  if not held[id] then
    lost[#lost + 1] = id
  else
    local seen = redis.call('HMGET', run, unpack(SEEN))
    if seen[4] then
      claimed[#claimed + 1] = id
      revoked[#revoked + 1] = id
    else
      local wary = suspect(seen, id, instance, after)
      if isolated or (wary and (not alone or taken > 0)) then
        deferred[#deferred + 1] = id
      else
        claimed[#claimed + 1] = id
        counts[i] = take(stream, group, run, seen, id, instance, consumer, now)
        taken = taken + 1
        isolated = wary
        if wary then alone_id = id end
        if seen[5] then redis.pcall('PUBLISH', run .. ':events', 'running') end
      end
    end
  end
end
if claim and #claimed > 0 then each_ids({'XCLAIM', stream, group, consumer, 0}, claimed, {'JUSTID'}) end
return {lost, counts, deferred, alone_id, revoked}
