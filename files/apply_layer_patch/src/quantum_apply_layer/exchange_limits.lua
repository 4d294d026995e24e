-- One request's passage through the exchange's limits (the functions: exchange_budget.lua).
-- KEYS: 1 weight counter, 2 orders-per-10s counter, 3 orders-per-minute counter, 4 blocked-until (ms)
-- ARGV: 1 mode: 'reserve' | 'observe' | 'block'
--   reserve: 2 weight, 3 orders, 4 weight budget, 5 orders/10s budget, 6 orders/min budget
--            -> {1, '', 0} reserved, or {0, what, ms to wait} and nothing counted
--   observe: 2 used weight, 3 orders in 10 s, 4 orders in the minute (the exchange's headers; -1 = absent)
--            -> counters raised to what the exchange says, never lowered
--   block:   2 ms from now until which nothing may be sent (a 429's or a 418's Retry-After)

local mode = ARGV[1]

if mode == 'block' then
  budget_block(KEYS, tonumber(ARGV[2]))
  return {1, '', 0}
end

if mode == 'observe' then
  budget_observe(KEYS, {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])})
  return {1, '', 0}
end

local limit, wait_ms = budget_reserve(
  KEYS, tonumber(ARGV[2]), tonumber(ARGV[3]), {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
)
if limit then
  return {0, limit, wait_ms}
end
return {1, '', 0}
