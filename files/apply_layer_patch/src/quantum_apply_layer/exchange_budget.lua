-- The exchange's limits for every process sharing this Redis (one account, one IP): request weight a
-- minute, orders per 10 s and per minute, in fixed windows of Redis time, and the end of a ban.
-- Shared by exchange_limits.lua (each request) and claim.lua (a plan's orders, counted with its claim).
-- Budget keys, in this order: weight counter, orders-per-10s counter, orders-per-minute counter,
-- blocked-until (ms). Counters are hashes {window = index of the window, count = n}.

local BUDGET_WINDOWS = {60000, 10000, 60000}
local BUDGET_NAMES = {'weight', 'orders_10s', 'orders_1m'}

local function budget_now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function budget_current(key, length, now)
  local window = math.floor(now / length)
  local stored = redis.call('HMGET', key, 'window', 'count')
  if tonumber(stored[1]) == window then
    return window, tonumber(stored[2]) or 0
  end
  return window, 0
end

local function budget_store(key, length, window, count)
  redis.call('HSET', key, 'window', window, 'count', count)
  redis.call('PEXPIRE', key, 2 * length)
end

-- May `weight` and `orders` be spent now, within {weight, orders/10s, orders/min} budgets? Counted only
-- when all fit. -> nil, or the limit in the way and the ms until it lets go (nothing counted).
local function budget_reserve(keys, weight, orders, budgets)
  local now = budget_now_ms()
  local blocked = tonumber(redis.call('GET', keys[4]) or '0')
  if blocked > now then
    return 'blocked', blocked - now
  end
  local amounts = {weight, orders, orders}
  local found = {}
  for i = 1, 3 do
    local window, count = budget_current(keys[i], BUDGET_WINDOWS[i], now)
    if amounts[i] > 0 and count + amounts[i] > budgets[i] then
      return BUDGET_NAMES[i], (window + 1) * BUDGET_WINDOWS[i] - now
    end
    found[i] = {window, count}
  end
  for i = 1, 3 do
    if amounts[i] > 0 then
      budget_store(keys[i], BUDGET_WINDOWS[i], found[i][1], found[i][2] + amounts[i])
    end
  end
  return nil
end

-- What the exchange says it counted (-1 = absent): counters raised to it, never lowered.
local function budget_observe(keys, seen_counts)
  local now = budget_now_ms()
  for i = 1, 3 do
    local seen = seen_counts[i]
    if seen >= 0 then
      local window, count = budget_current(keys[i], BUDGET_WINDOWS[i], now)
      if seen > count then
        budget_store(keys[i], BUDGET_WINDOWS[i], window, seen)
      end
    end
  end
end

-- Nothing may be sent by any process for `ms` from now (a 429's or a 418's Retry-After).
local function budget_block(keys, ms)
  local until_ms = budget_now_ms() + ms
  local blocked = tonumber(redis.call('GET', keys[4]) or '0')
  if until_ms > blocked then
    redis.call('SET', keys[4], until_ms, 'PX', ms)
  end
end
