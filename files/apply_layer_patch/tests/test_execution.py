"""The send path against an emulator as strict as Binance: stop-loss updates that replace the position's
stop on the algo order API (and their repair after a crash), fills recorded as the exchange reports them,
refusals with their codes, and a ban that halts the service."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from conftest import ServiceFactory
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET
from plans import add_plan, plan_fields, wait_for_results
from redis.asyncio import Redis
from redis_server import RedisServer
from service_process import ServiceProcess

from quantum_apply_layer import keys, metrics
from quantum_apply_layer.autotrip import AutoTrip
from quantum_apply_layer.config import load_settings
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_state import Faults
from quantum_apply_layer.exchange import Exchange, ExchangeError
from quantum_apply_layer.exchange_limits import SharedLimiter
from quantum_apply_layer.execution import MismatchClock, PositionUnknown, StepExecutor, StepOutcome
from quantum_apply_layer.plan import Plan, parse_plan
from quantum_apply_layer.position_book import PositionBook
from quantum_apply_layer.scripts import register_scripts
from quantum_apply_layer.switch import read_audit

P33 = {"safe_close_qty": 0.5, "exchange_position_amt": 0.5}


def stop_steps(price: float) -> str:
    return json.dumps([{"step": "UPDATE_SL", "type": "stop_loss_order", "price": price}])


def executor(exchange: Exchange) -> StepExecutor:
    return StepExecutor(exchange, PositionBook(10), MismatchClock(), lambda _symbol: None)


async def run_step(steps: StepExecutor, plan: Plan, resumed: bool) -> StepOutcome:
    """One plan's first step as the service runs it: prepared before the claim, then sent."""
    return await steps.run(plan, 0, P33, resumed, await steps.prepare(plan))


async def test_a_stop_loss_update_replaces_the_standing_stop(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    async with running_service():
        await add_plan(redis, "sl-1", steps=stop_steps(60000), action="UPDATE_SL")
        await wait_for_results(redis, 1)
        await add_plan(redis, "sl-2", steps=stop_steps(61000), action="UPDATE_SL")
        found = await wait_for_results(redis, 2)
    assert (found["sl-1"]["status"], found["sl-2"]["status"]) == ("executed", "executed")
    standing = emulator.open_algo_orders("BTCUSDT")
    assert [(o["clientAlgoId"], o["triggerPrice"], o["closePosition"]) for o in standing] == [
        ("qh-sl-2-0", "61000.00", True)
    ]
    assert [(o.type, o.status) for o in emulator.orders()] == [("STOP_MARKET", "NEW"), ("STOP_MARKET", "NEW")]


async def test_a_crash_between_cancel_and_place_is_repaired_when_the_plan_resumes(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    old = parse_plan(plan_fields("old", steps=stop_steps(60000), action="UPDATE_SL"))
    new = parse_plan(plan_fields("new", steps=stop_steps(61000), action="UPDATE_SL"))
    await run_step(executor(exchange), old, resumed=False)
    # The crash: the new plan had cancelled the old stop and died before placing its own.
    [standing] = await exchange.open_stops("BTCUSDT")
    await exchange.cancel_stop("BTCUSDT", standing)
    assert emulator.open_algo_orders("BTCUSDT") == []
    outcome = await run_step(executor(exchange), new, resumed=True)
    assert outcome.status == "sent"
    again = await run_step(executor(exchange), new, resumed=True)  # a second restart after the place
    assert (again.status, again.exchange_order_id) == ("found", outcome.exchange_order_id)
    standing_after = emulator.open_algo_orders("BTCUSDT")
    assert [(o["clientAlgoId"], o["triggerPrice"]) for o in standing_after] == [("qh-new-0", "61000.00")]


async def test_a_close_filled_in_part_is_partial_never_executed(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(fill_ratio=0.5))
    async with running_service():
        await add_plan(redis, "thin")
        result = (await wait_for_results(redis, 1))["thin"]
    assert result["status"] == "partial", result
    [step] = json.loads(result["steps"])
    assert (step["status"], step["exchange_status"], step["quantity"], step["filled_qty"]) == (
        "sent",
        "EXPIRED",
        0.01,
        0.005,
    )
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.495)


async def test_a_close_that_filled_nothing_and_price_protection_are_rejected_with_their_code(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    close = parse_plan(plan_fields("pp"))
    emulator.set_faults(Faults(price_protect_next=1))
    refused = await run_step(executor(exchange), close, resumed=False)
    assert (refused.status, refused.detail.startswith("rejected code=-4131")) == ("rejected", True)
    emulator.set_faults(Faults(fill_ratio=0.0))
    expired = await run_step(executor(exchange), parse_plan(plan_fields("none")), resumed=False)
    assert (expired.status, expired.exchange_status, expired.filled_qty) == ("rejected", "EXPIRED", 0.0)
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.5)


async def test_refused_stops_count_towards_the_auto_trip(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_mark_prices({"BTCUSDT": 50000})  # a sell stop at 55000 would trigger at once: -2021
    steps = executor(exchange)
    refused_before = metrics.REGISTRY.get_sample_value("apply_stop_loss_refused_total", {"code": "-2021"})
    for index in range(2):
        plan = parse_plan(plan_fields(f"above-{index}", steps=stop_steps(55000), action="UPDATE_SL"))
        outcome = await run_step(steps, plan, resumed=False)
        assert (outcome.status, "code=-2021" in outcome.detail) == ("rejected", True)
    assert steps.error_streak == 2
    refused_after = metrics.REGISTRY.get_sample_value("apply_stop_loss_refused_total", {"code": "-2021"})
    assert (refused_after or 0) - (refused_before or 0) == 2


async def test_an_ip_ban_halts_the_service_through_the_auto_trip(
    redis: Redis, emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_faults(Faults(weight_per_minute=3, ban_seconds=180, window_scale=60))
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # another client on the same IP goes on after its 429
            async with http.get(f"{emulator.base_url}/fapi/v1/ping"):
                pass
    with pytest.raises(ExchangeError) as banned:
        await exchange.ping()
    assert banned.value.kind == "rate_limit"
    assert 170 <= (metrics.REGISTRY.get_sample_value("apply_exchange_ban_remaining_seconds") or 0) <= 180
    settings = load_settings({"APPLY_AUTO_TRIP_CHECKS": "3", "APPLY_CONSUMER_NAME": "host-b"})
    trip = AutoTrip(redis, register_scripts(redis), settings, lambda: 0, lambda: 0.0, lambda: None)
    for _ in range(3):
        await trip.check()
    assert await redis.get(keys.GLOBAL_SWITCH) == "true"
    assert (await redis.get(keys.GLOBAL_SWITCH_REASON)).startswith("auto-trip: exchange_ban: ")
    [audit] = await read_audit(redis, 1)
    assert audit["who"] == "auto-trip@host-b"


def test_the_service_refuses_to_start_on_an_account_in_hedge_mode(
    redis_server: RedisServer, emulator: ExchangeEmulator, tmp_path: Path
) -> None:
    emulator.set_faults(Faults(hedge_mode=True))
    service = ServiceProcess(redis_server.url, emulator.base_url, tmp_path / "service.log")
    service.start()
    assert service.process is not None
    code = service.process.wait(timeout=30)
    log = service.log_path.read_text()
    assert code == 7, log  # EXIT_EXCHANGE: the account must change, restarting will not help
    assert "cannot start: the Binance account is in hedge mode" in log
    assert "Traceback" not in log


async def test_a_step_held_back_by_the_limits_sends_nothing_and_is_no_failure(
    redis: Redis, emulator: ExchangeEmulator
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    adapter = Exchange(
        emulator.base_url, EMULATOR_API_KEY, EMULATOR_API_SECRET, 2.0, limiter=SharedLimiter(redis)
    )
    try:
        await adapter.open()
        steps = executor(adapter)
        plan = parse_plan(plan_fields("held"))
        prepared = await steps.prepare(plan)
        await SharedLimiter(redis).block(30)  # another process got a 429 with Retry-After: 30
        outcome = await steps.run(plan, 0, P33, False, prepared)
    finally:
        await adapter.close()
    assert (outcome.status, "held back" in outcome.detail) == ("held_back", True)
    assert steps.error_streak == 0
    assert emulator.orders() == []
    with pytest.raises(PositionUnknown) as before_the_claim:  # held back while preparing the next plan
        await steps.prepare(parse_plan(plan_fields("held-2")))
    assert before_the_claim.value.held_back
    assert steps.error_streak == 0
