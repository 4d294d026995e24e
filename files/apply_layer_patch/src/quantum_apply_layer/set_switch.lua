-- Write a switch, its reason and the audit entry together, and say what the switch was before.
-- KEYS: 1 switch, 2 its reason, 3 audit stream
-- ARGV: 1 new value, 2 reason, 3 who, 4 scope (global | symbol:<SYMBOL>), 5 audit stream max length
local old = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
local now = redis.call('TIME')
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
  'scope', ARGV[4], 'old', old, 'new', ARGV[1], 'old_state', switch_state(old ~= '' and old or nil),
  'new_state', switch_state(ARGV[1]), 'reason', ARGV[2], 'who', ARGV[3],
  'at', now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
return {old, id}
