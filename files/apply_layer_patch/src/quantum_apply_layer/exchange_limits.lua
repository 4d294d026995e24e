-- The exchange's limits for every process sharing this Redis (one account, one IP): request weight a
-- minute, orders per 10 s and per minute, in fixed windows of Redis time, and the end of a ban.
-- KEYS: 1 weight counter, 2 orders-per-10s counter, 3 orders-per-minute counter, 4 blocked-until (ms)
-- ARGV: 1 mode: 'reserve' | 'observe' | 'block'
--   reserve: 2 weight, 3 orders, 4 weight budget, 5 orders/10s budget, 6 orders/min budget
--            -> {1, '', 0} reserved, or {0, what, ms to wait} and nothing counted
--   observe: 2 used weight, 3 orders in 10 s, 4 orders in the minute (the exchange's headers; -1 = absent)
--            -> counters raised to what the exchange says, never lowered
--   block:   2 ms from now until which nothing may be sent (a 429's or a 418's Retry-After)
-- Counters are hashes {window = index of the window, count = n}.

local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local windows = {60000, 10000, 60000}

local function current(key, length)
  local window = math.floor(now / length)
  local stored = redis.call('HMGET', key, 'window', 'count')
  if tonumber(stored[1]) == window then
    return window, tonumber(stored[2]) or 0
  end
  return window, 0
end

local function store(key, length, window, count)
  redis.call('HSET', key, 'window', window, 'count', count)
  redis.call('PEXPIRE', key, 2 * length)
end

local mode = ARGV[1]

if mode == 'block' then
  local until_ms = now + tonumber(ARGV[2])
  local blocked = tonumber(redis.call('GET', KEYS[4]) or '0')
  if until_ms > blocked then
    redis.call('SET', KEYS[4], until_ms, 'PX', tonumber(ARGV[2]))
  end
  return {1, '', 0}
end

if mode == 'observe' then
  for i = 1, 3 do
    local seen = tonumber(ARGV[i + 1])
    if seen >= 0 then
      local window, count = current(KEYS[i], windows[i])
      if seen > count then
        store(KEYS[i], windows[i], window, seen)
      end
    end
  end
  return {1, '', 0}
end

local blocked = tonumber(redis.call('GET', KEYS[4]) or '0')
if blocked > now then
  return {0, 'blocked', blocked - now}
end
local amounts = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[3])}
local names = {'weight', 'orders_10s', 'orders_1m'}
local found = {}
for i = 1, 3 do
  local window, count = current(KEYS[i], windows[i])
  if amounts[i] > 0 and count + amounts[i] > tonumber(ARGV[i + 3]) then
    return {0, names[i], (window + 1) * windows[i] - now}
  end
  found[i] = {window, count}
end
for i = 1, 3 do
  if amounts[i] > 0 then
    store(KEYS[i], windows[i], found[i][1], found[i][2] + amounts[i])
  end
end
return {1, '', 0}
