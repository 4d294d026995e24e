"""The claims of the system this replaces, each proven here under failure: Redis lost while plans
flow, the switch set with plans in flight, the service killed at random points."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import ServiceFactory
from plans import add_plan, plan_fields, results, wait_for_results
from redis.asyncio import Redis
from redis_server import RedisServer
from service_process import ServiceProcess

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A Redis of this test's own, free to stop and start."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def load_plans(redis: Redis, count: int, prefix: str) -> list[str]:
    plan_ids = [f"{prefix}-{n}" for n in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for n, plan_id in enumerate(plan_ids):
            pipe.set(keys.governor_permit(plan_id), json.dumps({"granted": True}), ex=600)
            pipe.set(
                keys.p33_permit(plan_id),
                json.dumps(
                    {"allow": True, "safe_close_qty": 1.0, "exchange_position_amt": 100000.0, "reason": "t"}
                ),
                ex=600,
            )
            pipe.xadd(keys.PLAN_STREAM, plan_fields(plan_id, symbol=SYMBOLS[n % len(SYMBOLS)]))
        await pipe.execute()
    return plan_ids


async def claim_times(redis: Redis) -> dict[str, float]:
    marks = {}
    async for key in redis.scan_iter(match="quantum:apply:dedupe:*", count=1000):
        mark = json.loads(await redis.get(key))
        marks[key.removeprefix("quantum:apply:dedupe:")] = float(mark.get("claimed_at", 0))
    return marks


def plan_of(client_order_id: str | None) -> str:
    return (client_order_id or "").removeprefix("qh-").rsplit("-", 1)[0]


def order_plan_ids(emulator: ExchangeEmulator) -> Counter[str]:
    """Plans with an order the exchange accepted (the emulator logs rejected ones too)."""
    return Counter(plan_of(o.client_order_id) for o in emulator.orders() if o.status != "REJECTED")


async def test_switch_set_with_1000_plans_in_flight_stops_every_later_order(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    plan_ids = await load_plans(redis, 1000, "flight")
    async with running_service(APPLY_MAX_IN_FLIGHT="32"):
        while await redis.xlen(keys.RESULT_STREAM) < 100:
            await asyncio.sleep(0.005)
        async with redis.pipeline(transaction=True) as pipe:  # the SET and the time it took effect
            pipe.set(keys.GLOBAL_SWITCH, "true")
            pipe.time()
            _, (seconds, micros) = await pipe.execute()
        halted_at = seconds + micros / 1e6
        found = await wait_for_results(redis, 1000, timeout_s=60)
    claimed = await claim_times(redis)
    started_after = [plan_id for plan_id, at in claimed.items() if at > halted_at]
    assert started_after == [], f"{len(started_after)} plans claimed after the SET"
    orders = order_plan_ids(emulator)
    assert set(orders) <= set(claimed)  # every order belongs to a plan claimed before the halt
    assert max(orders.values()) == 1
    statuses = Counter(found[plan_id]["status"] for plan_id in plan_ids)
    assert statuses["halted"] > 0
    assert statuses["executed"] == len(orders)
    assert statuses["halted"] + statuses["executed"] == 1000, (
        statuses,
        [found[p] for p in plan_ids if found[p]["status"] not in {"halted", "executed"}][:2],
    )


async def test_redis_lost_while_plans_flow_sends_nothing_and_loses_nothing(
    own_redis: RedisServer, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    plan_ids = await load_plans(redis, 400, "outage")
    service = ServiceProcess(
        own_redis.url, emulator.base_url, tmp_path / "service.log", APPLY_MAX_IN_FLIGHT="4"
    )
    service.start()
    try:
        while await redis.xlen(keys.RESULT_STREAM) < 50:
            await asyncio.sleep(0.01)
        clock = asyncio.get_running_loop().time  # CLOCK_MONOTONIC, as the emulator's receive times
        own_redis.stop()
        dead_at = clock()
        await asyncio.sleep(2.5)
        assert service.alive  # fail closed is not a crash
        restarted_at = clock()
        own_redis.start()
        await redis.aclose()  # its connection died with the server
        redis = Redis.from_url(own_redis.url, decode_responses=True)
        found = await wait_for_results(redis, 400, timeout_s=60)
        claimed = await claim_times(redis)
    finally:
        service.terminate()
        await redis.aclose()
    # While Redis was down, only plans claimed before it died (at most APPLY_MAX_IN_FLIGHT in hand)
    # could still reach the exchange; none started while it was down.
    during = [o for o in emulator.orders() if dead_at <= o.received_monotonic <= restarted_at]
    assert len(during) <= 4
    assert all(plan_of(o.client_order_id) in claimed for o in during)
    assert set(found) == set(plan_ids)  # none lost
    orders = order_plan_ids(emulator)
    assert max(orders.values()) == 1  # none doubled
    assert Counter(found[p]["status"] for p in plan_ids)["executed"] == len(orders)


async def test_sigkill_at_random_points_neither_doubles_nor_loses_a_plan(
    redis_server: RedisServer, redis: Redis, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_positions({symbol: 100000.0 for symbol in SYMBOLS})
    plan_ids = await load_plans(redis, 600, "kill")
    service = ServiceProcess(redis_server.url, emulator.base_url, tmp_path / "service.log")
    chance = random.Random(20261125)
    kills = 0
    # Kill points by progress, not by time: each after a random number of further results, so the
    # kills land mid-flow however fast this machine is.
    while kills < 6:
        target = await redis.xlen(keys.RESULT_STREAM) + chance.randint(20, 80)
        service.start()
        for _ in range(1000):  # bounded: 20 s at most
            if await redis.xlen(keys.RESULT_STREAM) >= target:
                break
            await asyncio.sleep(0.02)
        service.kill()
        kills += 1
    service.start()
    try:
        found = await wait_for_results(redis, 600, timeout_s=90)
    finally:
        assert service.terminate() == 0
    assert set(found) == set(plan_ids)  # none lost
    assert (await redis.xlen(keys.RESULT_STREAM)) == 600  # each recorded once
    orders = order_plan_ids(emulator)
    assert max(orders.values()) == 1, [p for p, n in orders.items() if n > 1]
    not_executed = [found[p] for p in orders if found[p]["status"] != "executed"]
    assert not_executed == []
    # A plan resumed after the kill is sized by the permit it consumed, not by the whole position.
    assert {o.quantity for o in emulator.orders() if o.status != "REJECTED"} == {1.0}


async def test_malformed_plans_among_good_ones_are_dead_lettered_and_the_rest_runs(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 1.0})
    async with running_service():
        await redis.xadd(keys.PLAN_STREAM, {"garbage": "yes"})
        await add_plan(redis, "good")
        found = await wait_for_results(redis, 2)
        ((_dlq_id, dead),) = await redis.xrange(keys.DLQ_STREAM)
    assert found["good"]["status"] == "executed"
    assert dead == {"garbage": "yes", "dlq_reason": "missing_field: field 'plan_id' is missing or empty"}
    assert (await results(redis))[""]["status"] == "dead_letter"
