"""The Lua scripts that make a decision atomic inside Redis, each with the shared functions it uses: the
switch states (switch_state.lua) and the exchange's budget (exchange_budget.lua)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def lua_source(*names: str) -> str:
    """A script as Redis runs it: the files named, in order (the shared functions, then the script)."""
    package = files(__package__)
    return "\n".join(package.joinpath(name).read_text() for name in names)


@dataclass(frozen=True)
class Scripts:
    claim: AsyncScript
    set_switch: AsyncScript
    record: AsyncScript


def register_scripts(redis: Redis) -> Scripts:
    """Scripts run by EVALSHA, loaded again by redis-py if a restarted Redis forgot them."""
    return Scripts(
        claim=redis.register_script(lua_source("switch_state.lua", "exchange_budget.lua", "claim.lua")),
        set_switch=redis.register_script(lua_source("switch_state.lua", "set_switch.lua")),
        record=redis.register_script(lua_source("switch_state.lua", "record.lua")),
    )
