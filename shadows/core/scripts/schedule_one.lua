-- Does the run `holder` (a stream id; '' outside of a run) hold the key of `run` now?
local function holds(run, state, holder)
  if holder == '' or (state ~= 'running' and state ~= 'queued') then return false end
  return redis.call('HGET', run, 'message') == holder
end

-- Add (or, mode 'replace', swap) one task; returns its state and its stream id if queued.
-- From inside the run that holds the key, the task is kept as that run's successor and
-- placed when the run ends (COMPLETE): a chain never overlaps itself.
local function schedule_one(stream, queue, run, parked, successor, key, when, now, mode,
                            group, holder, fields)
  local state = redis.call('HGET', run, 'state')
  if holds(run, state, holder) then
    if mode == 'add' and redis.call('HEXISTS', run, 'successor') == 1 then
      return 'exists', 'successor'
    end
    redis.call('DEL', successor)
    redis.call('HSET', successor, unpack(fields))
    redis.call('HSET', run, 'successor', mode)
    return 'successor', ''
  end
  if mode == 'add' then
    if state == 'scheduled' or state == 'queued' or state == 'running' then
      return 'exists', state
    end
  else
    if state == 'running' then return 'exists', state end
    if state == 'queued' then
      local id = redis.call('HGET', run, 'message')
      if id then
        if pending_owner(stream, group, id) then return 'exists', 'running' end
        redis.call('XDEL', stream, id)
      end
    elseif state == 'scheduled' then
      redis.call('ZREM', queue, key)
    end
  end
  local id = place(stream, queue, run, parked, key, when, now, fields, not state)
  if id then return 'queued', id end
  return 'scheduled', ''
end
