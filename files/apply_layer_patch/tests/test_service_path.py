"""The path of one plan, end to end against real Redis and the emulator."""

from __future__ import annotations

import asyncio
import json

from conftest import ServiceFactory
from plans import add_plan, grant_permits, plan_fields, wait_for_results
from redis.asyncio import Redis

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.execution import Prepared, StepOutcome
from quantum_apply_layer.plan import Plan


async def test_a_permitted_plan_sends_one_reduce_only_order(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    async with running_service():
        await add_plan(redis, "p-1")
        result = (await wait_for_results(redis, 1))["p-1"]
    assert result["status"] == "executed", result
    orders = emulator.orders()
    assert [(o.client_order_id, o.side, o.type, o.reduce_only) for o in orders] == [
        ("qh-p-1-0", "SELL", "MARKET", True)
    ]
    assert float(orders[0].quantity) == 0.01  # P3.3's safe_close_qty, not the whole position
    assert await redis.get(keys.governor_permit("p-1")) is None  # consumed
    assert await redis.get(keys.p33_permit("p-1")) is None


async def test_halted_switch_sends_nothing_and_records_halted(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    await redis.set(keys.GLOBAL_SWITCH, "true")
    async with running_service():
        await add_plan(redis, "p-halt")
        result = (await wait_for_results(redis, 1))["p-halt"]
    assert result["status"] == "halted"
    assert emulator.orders() == []
    assert await redis.get(keys.governor_permit("p-halt")) is not None  # not consumed by a halted plan


async def test_reduce_only_lets_closes_through_and_blocks_stop_updates(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    await redis.set(keys.GLOBAL_SWITCH, " Reduce_Only ")
    stop = json.dumps([{"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000}])
    async with running_service():
        await add_plan(redis, "close")
        await add_plan(redis, "stop", steps=stop, action="UPDATE_SL")
        found = await wait_for_results(redis, 2)
    assert found["close"]["status"] == "executed"
    assert found["stop"]["status"] == "reduce_only_blocked"
    assert [o.client_order_id for o in emulator.orders()] == ["qh-close-0"]


async def test_waiting_plan_executes_when_its_permits_arrive(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    async with running_service(APPLY_PERMIT_TIMEOUT_MS="5000"):
        await add_plan(redis, "late", permits=False)
        await asyncio.sleep(0.3)
        assert emulator.orders() == []  # waiting, not sent on no permit
        await grant_permits(redis, "late")
        result = (await wait_for_results(redis, 1))["late"]
    assert result["status"] == "executed"


async def test_one_permit_is_not_enough_and_is_not_consumed(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    await redis.set(keys.governor_permit("half"), json.dumps({"granted": True}), ex=60)
    async with running_service(APPLY_PERMIT_TIMEOUT_MS="300"):
        await add_plan(redis, "half", permits=False)
        result = (await wait_for_results(redis, 1))["half"]
    assert result["status"] == "blocked"
    assert result["reason"] == "permit_timeout: no p33 permit before the deadline"
    assert emulator.orders() == []
    assert await redis.get(keys.governor_permit("half")) is not None


async def test_denied_permit_blocks(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    await grant_permits(redis, "denied")
    await redis.set(keys.p33_permit("denied"), json.dumps({"allow": False, "reason": "position_flat"}), ex=60)
    async with running_service():
        await redis.xadd(keys.PLAN_STREAM, plan_fields("denied"))
        result = (await wait_for_results(redis, 1))["denied"]
    assert result["status"] == "blocked"
    assert result["reason"] == "permit_denied: p33:position_flat"
    assert emulator.orders() == []


async def test_a_plan_id_executes_once(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    async with running_service():
        await add_plan(redis, "twice")
        await wait_for_results(redis, 1)
        await add_plan(redis, "twice")  # fresh permits: still the same plan id
        entries = await redis.xrange(keys.RESULT_STREAM)
        while len(entries) < 2:
            await asyncio.sleep(0.02)
            entries = await redis.xrange(keys.RESULT_STREAM)
    assert [fields["status"] for _id, fields in entries] == ["executed", "duplicate"]
    assert len(emulator.orders()) == 1


async def test_skip_decision_and_hold_send_nothing(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    async with running_service():
        await add_plan(redis, "skip", decision="SKIP")
        await add_plan(redis, "hold", action="HOLD", steps="[]")
        found = await wait_for_results(redis, 2)
    assert {found["skip"]["status"], found["hold"]["status"]} == {"skipped"}
    assert emulator.orders() == []


async def test_stale_plan_is_blocked(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    async with running_service(APPLY_MAX_PLAN_AGE_S="60"):
        await add_plan(redis, "old", timestamp="1000")
        result = (await wait_for_results(redis, 1))["old"]
    assert result["status"] == "blocked"
    assert result["reason"].startswith("stale")
    assert emulator.orders() == []


async def test_testnet_skips_permits(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"ETHUSDT": -2.0})
    async with running_service(TESTNET="true"):
        await add_plan(redis, "tn", permits=False, symbol="ETHUSDT")
        result = (await wait_for_results(redis, 1))["tn"]
    assert result["status"] == "executed"
    (order,) = emulator.orders()
    assert (order.side, float(order.quantity)) == ("BUY", 2.0)


async def test_a_step_that_raises_after_a_sent_close_still_ends_in_one_result(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    """Any exception after an order went out: the result says what was sent and what failed, and the
    plan is done (its mark too), never left pending with orders out and nothing recorded."""
    emulator.set_positions({"BTCUSDT": 0.5})
    steps = json.dumps(
        [
            {"step": "CLOSE_FULL", "type": "market_reduce_only"},
            {"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000},
        ]
    )
    async with running_service() as service:
        run_step = service.executor.run

        async def second_step_breaks(
            plan: Plan, index: int, p33: dict[str, object], resumed: bool, prepared: Prepared
        ) -> StepOutcome:
            if index == 1:
                raise ZeroDivisionError("a bug nobody foresaw")
            return await run_step(plan, index, p33, resumed, prepared)

        service.executor.run = second_step_breaks  # type: ignore[method-assign]
        await add_plan(redis, "half", steps=steps)
        result = (await wait_for_results(redis, 1))["half"]
        await asyncio.sleep(0.3)
    assert result["status"] == "partial"
    outcomes = json.loads(result["steps"])
    assert [step["status"] for step in outcomes] == ["sent", "error"]
    assert "unexpected ZeroDivisionError" in outcomes[1]["detail"]
    assert result["client_order_ids"] == "qh-half-0"
    assert json.loads(await redis.get(keys.dedupe_mark("half")))["state"] == "done"
    assert await redis.xlen(keys.RESULT_STREAM) == 1
    assert [o.client_order_id for o in emulator.orders()] == ["qh-half-0"]
