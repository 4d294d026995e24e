"""The Lua scripts that make a decision atomic inside Redis, each with the shared switch states."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def lua_source(name: str) -> str:
    """A script as Redis runs it: the shared switch-state functions, then the script itself."""
    package = files(__package__)
    return package.joinpath("switch_state.lua").read_text() + "\n" + package.joinpath(name).read_text()


@dataclass(frozen=True)
class Scripts:
    claim: AsyncScript
    set_switch: AsyncScript
    record: AsyncScript


def register_scripts(redis: Redis) -> Scripts:
    """Scripts run by EVALSHA, loaded again by redis-py if a restarted Redis forgot them."""
    return Scripts(
        claim=redis.register_script(lua_source("claim.lua")),
        set_switch=redis.register_script(lua_source("set_switch.lua")),
        record=redis.register_script(lua_source("record.lua")),
    )
