-- Record one handled stream entry, once: its result (and dead letter), the mark that remembers it, and
-- the ack, in one atomic step. An entry recorded before (a replay after the consumer group was lost and
-- made again) is only acknowledged: no second result, no second dead letter, and, because the claim
-- finds the mark, no order for a plan that was recorded as halted, blocked or skipped.
-- KEYS: 1 result stream, 2 dead-letter stream, 3 plan mark (the plan id's dedupe mark, or the entry's
--       mark when the entry has no plan id of its own), 4 entry mark, 5 plan stream
-- ARGV: 1 entry id, 2 consumer group, 3 result stream max length, 4 mark TTL in seconds, 5 mark (JSON),
--       6 result field count n, 7 dead-letter field count m, then n result name/value pairs, then m
--       dead-letter name/value pairs

local function recorded_by_this_entry(key)
  local existing = redis.call('GET', key)
  if not existing then
    return false
  end
  local ok, mark = pcall(cjson.decode, existing)
  return ok and type(mark) == 'table' and mark.owner == ARGV[1] and mark.state == 'done'
end

if recorded_by_this_entry(KEYS[3]) or recorded_by_this_entry(KEYS[4]) then
  redis.call('XACK', KEYS[5], ARGV[2], ARGV[1])
  return 'already_recorded'
end

local result_count, dead_letter_count = tonumber(ARGV[6]), tonumber(ARGV[7])
local first_dead_letter = 8 + 2 * result_count
if dead_letter_count > 0 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, first_dead_letter, first_dead_letter + 2 * dead_letter_count - 1))
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 8, first_dead_letter - 1))

-- The plan id's mark belongs to the entry that first used the id: a later entry with the same id (a
-- duplicate) is remembered under its own entry mark instead.
local target = KEYS[4]
local plan_mark = redis.call('GET', KEYS[3])
if not plan_mark then
  target = KEYS[3]
else
  local ok, mark = pcall(cjson.decode, plan_mark)
  if ok and type(mark) == 'table' and mark.owner == ARGV[1] then
    target = KEYS[3]
  end
end
redis.call('SET', target, ARGV[5], 'EX', ARGV[4])
redis.call('XACK', KEYS[5], ARGV[2], ARGV[1])
return 'recorded'
