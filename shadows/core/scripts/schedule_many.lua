-- Many adds in one call (a batch): one script call costs Redis far more than the few
-- writes of one add, so a batch pays it once per group of tasks.
-- KEYS: stream, queue, then run, parked and successor of each task
-- ARGV: now_ms, mode, group, then per task: key, when_ms, holder, number of fields,
--       fields...
-- Returns the flat {state, detail, state, detail, ...} of the tasks, in order.
local now, mode, group = ARGV[1], ARGV[2], ARGV[3]
local replies = {}
local at = 4
for k = 3, #KEYS, 3 do
  local key, when, holder = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local count = tonumber(ARGV[at + 3])
  local fields = {}
  for i = at + 4, at + 3 + count do fields[#fields + 1] = ARGV[i] end
  at = at + 4 + count
  local state, detail = schedule_one(KEYS[1], KEYS[2], KEYS[k], KEYS[k + 1], KEYS[k + 2],
                                     key, when, now, mode, group, holder, fields)
  replies[#replies + 1] = state
  replies[#replies + 1] = detail
end
return replies
