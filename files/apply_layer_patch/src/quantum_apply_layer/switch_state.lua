-- The contract's switch states, shared by every script that gates an order (prepended to them).
-- Compared case-insensitively with whitespace trimmed; a value nobody defined halts (fail closed).
local function switch_state(raw)
  if not raw then
    return 'running'
  end
  local value = string.lower((string.gsub(raw, '^%s*(.-)%s*$', '%1')))
  if value == 'false' or value == '0' or value == 'no' or value == 'off' then
    return 'running'
  end
  if value == 'true' or value == '1' or value == 'yes' or value == 'on' then
    return 'halted'
  end
  if value == 'reduce_only' then
    return 'reduce_only'
  end
  return 'invalid'
end

local severity = {running = 0, reduce_only = 1, halted = 2, invalid = 3}

-- The stricter of the global and the symbol switch, with the scope that decided it.
local function effective_switch(global_raw, symbol_raw)
  local global, symbol = switch_state(global_raw), switch_state(symbol_raw)
  if severity[symbol] > severity[global] then
    return symbol, 'symbol'
  end
  return global, 'global'
end
