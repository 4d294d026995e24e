"""Every switch value of the contract, read the same way in Python and inside the claim script."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from quantum_apply_layer import keys
from quantum_apply_layer.claim import ClaimResult, claim_keys
from quantum_apply_layer.scripts import register_scripts
from quantum_apply_layer.switch import SwitchState, parse_switch, read_audit, set_switch

CONTRACT_TABLE = [
    (None, SwitchState.RUNNING),
    ("false", SwitchState.RUNNING),
    ("0", SwitchState.RUNNING),
    ("no", SwitchState.RUNNING),
    ("off", SwitchState.RUNNING),
    (" FALSE ", SwitchState.RUNNING),
    ("Off\n", SwitchState.RUNNING),
    ("true", SwitchState.HALTED),
    ("1", SwitchState.HALTED),
    ("yes", SwitchState.HALTED),
    ("on", SwitchState.HALTED),
    (" TRUE ", SwitchState.HALTED),
    ("On", SwitchState.HALTED),
    ("reduce_only", SwitchState.REDUCE_ONLY),
    (" REDUCE_ONLY ", SwitchState.REDUCE_ONLY),
    ("", SwitchState.INVALID),
    ("halt", SwitchState.INVALID),
    ("reduce-only", SwitchState.INVALID),
    ("2", SwitchState.INVALID),
    ("tru", SwitchState.INVALID),
    ("null", SwitchState.INVALID),
]
# claim.lua's last ARGV: the orders' weight and the exchange's budget (weight/min, orders/10s, orders/min).
BUDGET = (0, 1920, 240, 960)
# What claim.lua answers for a plan with permits under each state (invalid halts: fail closed).
CLAIM_KIND = {
    SwitchState.RUNNING: "claimed",
    SwitchState.HALTED: "halted",
    SwitchState.INVALID: "halted",
    SwitchState.REDUCE_ONLY: "reduce_only",
}


async def claim(redis: Redis, plan_id: str, only_reduces: bool, symbol: str = "BTCUSDT") -> ClaimResult:
    scripts = register_scripts(redis)
    args = [f"entry-{plan_id}", "1", "1" if only_reduces else "0", 60, "test", 1, 0, 0, "0", *BUDGET]
    return ClaimResult.from_script(await scripts.claim(keys=claim_keys(plan_id, symbol), args=args))


async def permits(redis: Redis, plan_id: str) -> None:
    await redis.set(keys.governor_permit(plan_id), json.dumps({"granted": True}))
    await redis.set(keys.p33_permit(plan_id), json.dumps({"allow": True, "safe_close_qty": 1}))


@pytest.mark.parametrize(("raw", "state"), CONTRACT_TABLE)
async def test_python_and_lua_read_every_value_alike(
    redis: Redis, raw: str | None, state: SwitchState
) -> None:
    assert parse_switch(raw) is state
    if raw is not None:
        await redis.set(keys.GLOBAL_SWITCH, raw)
    await permits(redis, "p")
    result = await claim(redis, "p", only_reduces=False)
    assert result.kind == CLAIM_KIND[state]
    if state is SwitchState.REDUCE_ONLY:
        await permits(redis, "r")
        assert (await claim(redis, "r", only_reduces=True)).kind == "claimed"


@pytest.mark.parametrize(
    ("global_value", "symbol_value", "kind"),
    [
        ("false", "true", "halted"),
        ("true", "false", "halted"),
        ("reduce_only", "false", "reduce_only"),
        ("false", "reduce_only", "reduce_only"),
        ("reduce_only", "bogus", "halted"),
        (None, None, "claimed"),
    ],
)
async def test_the_stricter_of_global_and_symbol_wins(
    redis: Redis, global_value: str | None, symbol_value: str | None, kind: str
) -> None:
    if global_value is not None:
        await redis.set(keys.GLOBAL_SWITCH, global_value)
    if symbol_value is not None:
        await redis.set(keys.symbol_switch("BTCUSDT"), symbol_value)
    await permits(redis, "p")
    assert (await claim(redis, "p", only_reduces=False)).kind == kind
    # Another symbol answers to the global switch alone.
    await permits(redis, "other")
    alone = CLAIM_KIND[parse_switch(global_value)]
    assert (await claim(redis, "other", only_reduces=False, symbol="ETHUSDT")).kind == alone


async def test_permits_serve_one_plan_once_under_concurrency(redis: Redis) -> None:
    await permits(redis, "race")
    scripts = register_scripts(redis)
    plan_keys = claim_keys("race", "BTCUSDT")
    replies = await asyncio.gather(
        *(
            scripts.claim(keys=plan_keys, args=[f"entry-{n}", "1", "1", 60, "test", 1, 0, 0, "0", *BUDGET])
            for n in range(50)
        )
    )
    kinds = sorted(ClaimResult.from_script(reply).kind for reply in replies)
    assert kinds.count("claimed") == 1
    assert set(kinds) == {"claimed", "duplicate"}


async def test_kill_writes_switch_reason_and_audit(redis: Redis) -> None:
    scripts = register_scripts(redis)
    change = await set_switch(redis, scripts, "on", "incident 42", "alice@host")
    assert (change.old, change.new) == ("", "true")
    assert await redis.get(keys.GLOBAL_SWITCH) == "true"
    assert await redis.get(keys.GLOBAL_SWITCH_REASON) == "incident 42"
    await set_switch(redis, scripts, "reduce-only", "winding down", "bob@host", symbol="ETHUSDT")
    assert await redis.get(keys.symbol_switch("ETHUSDT")) == "reduce_only"
    audit = await read_audit(redis, 10)
    assert [(a["scope"], a["old_state"], a["new_state"], a["who"]) for a in audit] == [
        ("symbol:ETHUSDT", "running", "reduce_only", "bob@host"),
        ("global", "running", "halted", "alice@host"),
    ]


async def test_kill_refuses_an_empty_reason(redis: Redis) -> None:
    with pytest.raises(ValueError, match="reason is required"):
        await set_switch(redis, register_scripts(redis), "on", "  ", "x")
    assert await redis.get(keys.GLOBAL_SWITCH) is None
