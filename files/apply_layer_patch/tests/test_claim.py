"""claim.py and claim.lua state one contract: the KEYS and ARGV in the same order (this fails when one
of them changes and the other does not); and the claim counts the plan's orders in the exchange's budget,
or claims nothing; and a claim packed once and held on its connection still claims when Redis forgot
the script or the connection broke."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
from plans import grant_permits, plan_fields
from redis.asyncio import Redis

from quantum_apply_layer import claim, exchange_limits, keys
from quantum_apply_layer.claim import CLAIM_ARGV, CLAIM_KEYS, ClaimResult, claim_args, claim_keys
from quantum_apply_layer.config import load_settings
from quantum_apply_layer.exchange_limits import Budget, SharedLimiter
from quantum_apply_layer.held_claim import HeldClaim
from quantum_apply_layer.plan import Plan, parse_plan
from quantum_apply_layer.sample_plans import CLOSE_FULL
from quantum_apply_layer.scripts import lua_source, register_scripts

LUA = resources.files("quantum_apply_layer").joinpath("claim.lua").read_text(encoding="utf-8")


def _numbered(header: str, name: str) -> list[str]:
    """`-- NAME: 1 a, 2 b (x, y),\n--       3 c` -> ["a", "b (x, y)", "c"]."""
    block = re.search(rf"^-- {name}: (.*?)(?=^-- [A-Z]+:|^[^-]|\Z)", header, re.M | re.S)
    assert block, f"claim.lua's header has no {name} line"
    flat = " ".join(line.removeprefix("--").strip() for line in block.group(1).splitlines())
    items = re.split(r",? (?=\d+ )", " " + flat)
    return [re.sub(r"^\d+ ", "", item).rstrip(",").strip() for item in items if item.strip()]


def test_the_script_header_lists_the_keys_and_argv_in_claim_py_order() -> None:
    assert _numbered(LUA, "KEYS") == list(CLAIM_KEYS)
    assert _numbered(LUA, "ARGV") == list(CLAIM_ARGV)


def test_claim_py_docstring_states_the_same_contract() -> None:
    assert claim.__doc__
    contract = claim.__doc__.split("\n\n")[1]  # the KEYS and ARGV paragraph
    as_lua = "\n".join(f"-- {line}" for line in contract.splitlines()) + "\n"
    assert _numbered(as_lua, "KEYS") == list(CLAIM_KEYS)
    assert _numbered(as_lua, "ARGV") == list(CLAIM_ARGV)


def test_the_script_reads_exactly_the_declared_keys_and_argv() -> None:
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", LUA)}
    used_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", LUA)}
    assert used_keys == set(range(1, len(CLAIM_KEYS) + 1))
    assert used_argv == set(range(1, len(CLAIM_ARGV) + 1))


def test_the_builders_give_one_value_per_declared_slot() -> None:
    settings = load_settings(
        {"APPLY_MAX_ORDERS_PER_SECOND": "7", "APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL": "3"}
    )
    plan = parse_plan(plan_fields("p1", symbol="ETHUSDT"))
    assert len(claim_keys(plan.plan_id, plan.symbol)) == len(CLAIM_KEYS)
    args = claim_args(plan, "1-0", settings, Budget(1920, 240, 960))
    assert len(args) == len(CLAIM_ARGV)
    # production: permits required; a full close only reduces; one order; the limits; no emergency;
    # an order weighs nothing on Binance's IP weight; the exchange's budget
    head = ["1-0", "1", "1", settings.dedupe_ttl_s, settings.consumer_name, 1, 7, 3, "0"]
    assert args == [*head, 0, 1920, 240, 960]


TWO_STEPS = json.dumps(
    [
        {"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 50},
        {"step": "UPDATE_SL", "type": "stop_loss_order", "price": 90000},
    ]
)


async def claimed(redis: Redis, plan: Plan, budget: Budget) -> ClaimResult:
    reply = await register_scripts(redis).claim(
        keys=claim_keys(plan.plan_id, plan.symbol),
        args=claim_args(plan, f"entry-{plan.plan_id}", load_settings({}), budget),
    )
    return ClaimResult.from_script(reply)


async def orders_counted(redis: Redis) -> list[int]:
    found = []
    for key in (exchange_limits.ORDERS_10S_KEY, exchange_limits.ORDERS_1M_KEY):
        found.append(int(await redis.hget(key, "count") or 0))
    return found


async def test_a_claim_counts_its_orders_in_the_exchange_budget_once(redis: Redis) -> None:
    plan = parse_plan(plan_fields("two", steps=TWO_STEPS, action="PARTIAL_50"))
    await grant_permits(redis, "two")
    assert (await claimed(redis, plan, Budget(1920, 240, 960))).kind == "claimed"
    assert await orders_counted(redis) == [2, 2]  # a close and a stop, counted with the claim
    assert (await claimed(redis, plan, Budget(1920, 240, 960))).kind == "resume"
    assert await orders_counted(redis) == [2, 2]  # resumed: sent on the claim's count, not counted again


async def test_a_full_budget_claims_nothing_and_keeps_the_permits(redis: Redis) -> None:
    await grant_permits(redis, "first")
    await grant_permits(redis, "second")
    budget = Budget(1920, 1, 960)
    assert (await claimed(redis, parse_plan(plan_fields("first")), budget)).kind == "claimed"
    refused = await claimed(redis, parse_plan(plan_fields("second")), budget)
    assert (refused.kind, refused.detail.partition(":")[0]) == ("held_back", "orders_10s")
    assert 0 < int(refused.detail.partition(":")[2]) <= 10_000  # ms until the window lets go
    assert await orders_counted(redis) == [1, 1]
    assert await redis.exists(keys.governor_permit("second"), keys.p33_permit("second")) == 2
    assert not await redis.exists(keys.dedupe_mark("second"))


async def test_a_ban_holds_back_every_claim_even_an_emergency_close(redis: Redis) -> None:
    await SharedLimiter(redis).block(30)  # a 418's Retry-After, seen by another process
    await grant_permits(redis, "routine")
    routine = await claimed(redis, parse_plan(plan_fields("routine")), Budget(1920, 240, 960))
    assert routine.detail.partition(":")[0] == "blocked"
    emergency = parse_plan(plan_fields("close-now", steps=CLOSE_FULL, emergency="true", emergency_side="ANY"))
    await redis.set(keys.emergency_token("close-now"), "operator@host")
    held = await claimed(redis, emergency, Budget(2280, 285, 1140))
    assert (held.kind, held.detail.partition(":")[0]) == ("held_back", "blocked")
    assert await redis.exists(keys.emergency_token("close-now"))  # the operator's token is kept


LUA_SCRIPT = lua_source("switch_state.lua", "exchange_budget.lua", "claim.lua")


def held_claim(redis: Redis, client: Redis, plan_id: str) -> HeldClaim:
    plan = parse_plan(plan_fields(plan_id))
    settings = load_settings({})
    args = claim_args(plan, f"entry-{plan_id}", settings, Budget(1920, 240, 960))
    return HeldClaim(register_scripts(redis).claim, client, claim_keys(plan_id, plan.symbol), args)


async def test_a_held_claim_runs_its_packed_bytes_again_on_each_try(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with redis.client() as client:
        held = held_claim(redis, client, "waits")
        await redis.script_load(LUA_SCRIPT)

        async def no_fallback(**_: object) -> None:
            raise AssertionError("the packed bytes were not enough: redis-py's call was used")

        monkeypatch.setattr(held, "_script", no_fallback)  # each try below goes by the packed bytes alone
        assert (await held.run()).kind == "permit_missing"
        await grant_permits(redis, "waits")
        assert (await held.run()).kind == "claimed"
        assert (await held.run()).kind == "resume"  # the same owner: the plan looks its orders up first


async def test_a_held_claim_loads_the_script_a_restarted_redis_forgot(redis: Redis) -> None:
    await grant_permits(redis, "after-restart")
    async with redis.client() as client:
        held = held_claim(redis, client, "after-restart")
        await redis.script_flush()  # as after a restart: NOSCRIPT to the packed EVALSHA
        assert (await held.run()).kind == "claimed"


async def test_a_held_claim_whose_connection_broke_reconnects(redis: Redis) -> None:
    await grant_permits(redis, "reconnects")
    async with redis.client() as client:
        held = held_claim(redis, client, "reconnects")
        own_id = await client.client_id()
        await redis.client_kill_filter(_id=str(own_id))
        claim = await held.run()
        assert claim.kind == "claimed"
        assert await client.client_id() != own_id  # a new connection carried it
