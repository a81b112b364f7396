-- KEYS: stream, queue, run, parked, successor
-- ARGV: key, when_ms, now_ms, mode ('add' | 'replace'), group, holder (the stream id of
--       the run scheduling it, or ''), fields...
-- Returns {state, detail}: {'queued', id}, {'scheduled', ''}, {'successor', ''} or
-- {'exists', current state}
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local state, detail = schedule_one(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1],
                                   ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], fields)
return {state, detail}
