"""The kill switch: its states, reading it (fail closed) and writing it (with reason and audit)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from . import keys
from .decoding import optional_text, text, text_fields
from .scripts import Scripts

AUDIT_MAXLEN = 100_000


class SwitchState(StrEnum):
    RUNNING = "running"
    REDUCE_ONLY = "reduce_only"
    HALTED = "halted"
    INVALID = "invalid"


SEVERITY = {SwitchState.RUNNING: 0, SwitchState.REDUCE_ONLY: 1, SwitchState.HALTED: 2, SwitchState.INVALID: 3}
RUNNING_VALUES = frozenset({"false", "0", "no", "off"})
HALTED_VALUES = frozenset({"true", "1", "yes", "on"})
# What `kill on|off|reduce-only` writes.
COMMAND_VALUES = {"on": "true", "off": "false", "reduce-only": "reduce_only"}


def parse_switch(raw: str | None) -> SwitchState:
    """The contract's table, as switch_state.lua implements it too (a test holds them equal)."""
    if raw is None:
        return SwitchState.RUNNING
    value = raw.strip().lower()
    if value in RUNNING_VALUES:
        return SwitchState.RUNNING
    if value in HALTED_VALUES:
        return SwitchState.HALTED
    if value == "reduce_only":
        return SwitchState.REDUCE_ONLY
    return SwitchState.INVALID


def stricter(first: SwitchState, second: SwitchState) -> SwitchState:
    return second if SEVERITY[second] > SEVERITY[first] else first


@dataclass(frozen=True)
class SwitchReading:
    scope: str
    raw: str | None
    reason: str | None

    @property
    def state(self) -> SwitchState:
        return parse_switch(self.raw)


async def read_global_switch(redis: Redis) -> SwitchReading:
    raw, reason = await redis.mget(keys.GLOBAL_SWITCH, keys.GLOBAL_SWITCH_REASON)
    return SwitchReading("global", optional_text(raw), optional_text(reason))


async def read_symbol_switches(redis: Redis) -> list[SwitchReading]:
    """Every per-symbol switch that is set, whatever its value."""
    readings = []
    async for key in redis.scan_iter(match=f"{keys.SYMBOL_SWITCH_PREFIX}*", count=1000):
        symbol = text(key).removeprefix(keys.SYMBOL_SWITCH_PREFIX)
        raw, reason = await redis.mget(keys.symbol_switch(symbol), keys.symbol_switch_reason(symbol))
        if raw is not None:
            readings.append(SwitchReading(f"symbol:{symbol}", optional_text(raw), optional_text(reason)))
    return sorted(readings, key=lambda reading: reading.scope)


@dataclass(frozen=True)
class SwitchChange:
    scope: str
    old: str
    new: str
    audit_id: str


async def set_switch(
    redis: Redis, scripts: Scripts, command: str, reason: str, who: str, symbol: str | None = None
) -> SwitchChange:
    """`command` is on | off | reduce-only. The reason is required: a halt nobody can explain is a page."""
    if command not in COMMAND_VALUES:
        raise ValueError(f"switch command {command!r}: accepted: {', '.join(COMMAND_VALUES)}")
    if not reason.strip():
        raise ValueError("a reason is required: who asked for it and why")
    value = COMMAND_VALUES[command]
    if symbol is None:
        scope, switch_key, reason_key = "global", keys.GLOBAL_SWITCH, keys.GLOBAL_SWITCH_REASON
    else:
        scope, switch_key, reason_key = (
            f"symbol:{symbol}",
            keys.symbol_switch(symbol),
            keys.symbol_switch_reason(symbol),
        )
    old, audit_id = await scripts.set_switch(
        keys=[switch_key, reason_key, keys.AUDIT_STREAM],
        args=[value, reason.strip(), who, scope, AUDIT_MAXLEN],
    )
    return SwitchChange(scope, text(old or ""), value, text(audit_id or ""))


async def read_audit(redis: Redis, count: int) -> list[dict[str, str]]:
    entries = await redis.xrevrange(keys.AUDIT_STREAM, count=count) or []
    return [{"id": text(entry_id), **text_fields(fields or {})} for entry_id, fields in entries]


def audit_time(entry: dict[str, str]) -> str:
    at = float(entry.get("at", "0") or 0)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
