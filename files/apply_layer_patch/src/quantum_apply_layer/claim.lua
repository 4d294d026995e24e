-- May this plan send its orders now? One atomic step: the switches, the dedupe mark, the order-rate
-- counters, the exchange's budget and both permits are read, and the permits consumed and the orders
-- counted, with no other command in between; so no order starts after the SET that halts it, a plan
-- never runs on one permit, a permit never serves two plans, the rate limits hold for every process
-- sharing this Redis, and nothing but the orders themselves is left between the claim and the exchange.
-- KEYS: 1 global switch, 2 symbol switch, 3 dedupe mark, 4 governor permit, 5 P3.3 permit,
--       6 global rate counter, 7 symbol rate counter, 8 emergency token,
--       9 exchange weight counter, 10 exchange orders-per-10s counter,
--       11 exchange orders-per-minute counter, 12 exchange blocked-until (ms)
-- ARGV: 1 owner (the plan's stream entry id), 2 permits required (1|0), 3 plan only reduces (1|0),
--       4 dedupe mark TTL in seconds, 5 consumer name, 6 orders in the plan,
--       7 global orders/s limit (0 = none), 8 symbol orders/s limit (0 = none), 9 emergency (1|0),
--       10 exchange weight of the orders, 11 exchange weight budget a minute,
--       12 exchange orders budget per 10s, 13 exchange orders budget a minute

local function now_text()
  local now = redis.call('TIME')
  return now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
end

-- A plan id already claimed: by this very entry (resumed after a crash), or by another (a duplicate).
local function claimed_before(existing)
  local ok, mark = pcall(cjson.decode, existing)
  if ok and type(mark) == 'table' and mark.state == 'claimed' and mark.owner == ARGV[1] then
    return {'resume', existing}
  end
  return {'duplicate', existing}
end

local existing = redis.call('GET', KEYS[3])
local orders = tonumber(ARGV[6])

-- The orders counted in the exchange's budget (exchange_budget.lua) with the claim, so the request
-- that follows needs no other trip to Redis. Nil when they fit; else the claim does not happen.
local function exchange_budget_refuses()
  local budget_keys = {KEYS[9], KEYS[10], KEYS[11], KEYS[12]}
  local budgets = {tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}
  local limit, wait_ms = budget_reserve(budget_keys, tonumber(ARGV[10]), orders, budgets)
  if limit then
    return {'held_back', limit, wait_ms}
  end
  return nil
end

-- An operator's emergency close: allowed whatever the switch says, but only with the one-time token
-- the CLI wrote, and only for a plan that reduces a position. Permits and our own order-rate limits do
-- not apply; the exchange's budget does, with the headroom kept for emergencies (ARGV 11 to 13).
if ARGV[9] == '1' then
  if ARGV[3] ~= '1' then
    return {'denied', 'emergency', 'not_reduce_only'}
  end
  if existing then
    return claimed_before(existing)
  end
  local token = redis.call('GET', KEYS[8])
  if not token then
    return {'denied', 'emergency', 'no_token'}
  end
  local held_back = exchange_budget_refuses()
  if held_back then
    return held_back
  end
  redis.call('DEL', KEYS[8])
  local mark = cjson.encode({
    state = 'claimed', owner = ARGV[1], consumer = ARGV[5], claimed_at = now_text(),
    emergency = token, governor = '', p33 = '',
  })
  redis.call('SET', KEYS[3], mark, 'EX', ARGV[4])
  return {'claimed', mark}
end

local state, scope = effective_switch(redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]))
if state == 'halted' or state == 'invalid' then
  return {'halted', scope .. ':' .. state}
end
if state == 'reduce_only' and ARGV[3] ~= '1' then
  return {'reduce_only', scope .. ':reduce_only'}
end

if existing then
  return claimed_before(existing)
end

local limits = {{KEYS[6], tonumber(ARGV[7]), 'global'}, {KEYS[7], tonumber(ARGV[8]), 'symbol'}}
for _, limit in ipairs(limits) do
  if limit[2] > 0 and (tonumber(redis.call('GET', limit[1])) or 0) + orders > limit[2] then
    return {'rate_limited', limit[3] .. ':' .. limit[2] .. '/s'}
  end
end

local governor, p33 = '', ''
if ARGV[2] == '1' then
  governor, p33 = redis.call('GET', KEYS[4]), redis.call('GET', KEYS[5])
  if not governor or not p33 then
    local missing = {}
    if not governor then table.insert(missing, 'governor') end
    if not p33 then table.insert(missing, 'p33') end
    return {'permit_missing', table.concat(missing, ',')}
  end
  local ok_governor, governor_permit = pcall(cjson.decode, governor)
  if not ok_governor or type(governor_permit) ~= 'table' then
    return {'denied', 'governor', 'unparseable'}
  end
  if governor_permit.granted ~= true then
    return {'denied', 'governor', tostring(governor_permit.reason or 'not_granted')}
  end
  local ok_p33, p33_permit = pcall(cjson.decode, p33)
  if not ok_p33 or type(p33_permit) ~= 'table' then
    return {'denied', 'p33', 'unparseable'}
  end
  if p33_permit.allow ~= true then
    return {'denied', 'p33', tostring(p33_permit.reason or 'not_allowed')}
  end
end

local held_back = exchange_budget_refuses()
if held_back then
  return held_back
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[4], KEYS[5])
end

-- One-second windows: the first order of a window starts its clock.
for _, limit in ipairs(limits) do
  if limit[2] > 0 then
    redis.call('INCRBY', limit[1], orders)
    if redis.call('PTTL', limit[1]) < 0 then
      redis.call('PEXPIRE', limit[1], 1000)
    end
  end
end

-- The permits travel in the mark: a plan resumed after a crash is sized by the permit it consumed.
local mark = cjson.encode({
  state = 'claimed', owner = ARGV[1], consumer = ARGV[5], claimed_at = now_text(),
  governor = governor, p33 = p33,
})
redis.call('SET', KEYS[3], mark, 'EX', ARGV[4])
return {'claimed', mark}
