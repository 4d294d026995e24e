"""Prices and quantities checked against the market's filters (from ccxt's exchangeInfo) before the claim."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from conftest import ServiceFactory
from plans import add_plan, wait_for_results
from redis.asyncio import Redis

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_markets import MARKETS, exchange_info
from quantum_apply_layer.market_filters import FilterError, MarketFilters


def btc() -> MarketFilters:
    (info,) = [
        entry for entry in exchange_info(0, 2400, 1200, 300)["symbols"] if entry["symbol"] == "BTCUSDT"
    ]
    return MarketFilters.from_exchange_info("BTCUSDT", info["filters"])


def test_filters_are_the_markets_own() -> None:
    spec, filters = MARKETS["BTCUSDT"], btc()
    assert (filters.tick_size, filters.min_price, filters.max_price) == (
        spec.tick_size,
        spec.min_price,
        spec.max_price,
    )
    assert (filters.step_size, filters.min_qty, filters.market_max_qty) == (
        spec.step_size,
        spec.min_qty,
        spec.market_max_qty,
    )


@pytest.mark.parametrize(
    ("price", "rounded"), [(64000.04, "64000.00"), (64000.05, "64000.10"), (261.1, "261.10")]
)
def test_a_stop_price_is_rounded_to_the_tick(price: float, rounded: str) -> None:
    assert btc().stop_price(price) == Decimal(rounded)


@pytest.mark.parametrize(
    ("price", "why"),
    [
        (1e308, "above BTCUSDT's max price"),
        (0.04, "rounds to 0.00, below BTCUSDT's min price"),
        (261.0, "below BTCUSDT's min price"),
        (float("nan"), "not a positive number"),
        (float("inf"), "not a positive number"),
        (-5.0, "not a positive number"),
    ],
)
def test_a_stop_price_outside_the_filters_is_refused(price: float, why: str) -> None:
    with pytest.raises(FilterError, match=why):
        btc().stop_price(price)


def test_a_quantity_is_cut_down_to_the_step_never_up() -> None:
    assert btc().market_quantity(0.0019999) == Decimal("0.001")
    with pytest.raises(FilterError, match="below BTCUSDT's min quantity"):
        btc().market_quantity(0.0009)
    with pytest.raises(FilterError, match="above BTCUSDT's market order maximum"):
        btc().market_quantity(1e308)


async def was_claimed(redis: Redis, plan_id: str) -> bool:
    """Recorded plans all keep a mark; only a claimed one holds the claim's time and permits."""
    mark = await redis.get(keys.dedupe_mark(plan_id))
    return mark is not None and "claimed_at" in json.loads(mark)


@pytest.mark.parametrize("price", [1e308, 0.04], ids=["1e308", "below-the-tick"])
async def test_a_stop_the_exchange_would_refuse_is_blocked_before_anything_is_claimed(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory, price: float
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    steps = json.dumps(
        [
            {"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 50},
            {"step": "UPDATE_SL", "type": "stop_loss_order", "price": price},
        ]
    )
    async with running_service():
        await add_plan(redis, "bad-stop", steps=steps, action="PARTIAL_50")
        result = (await wait_for_results(redis, 1))["bad-stop"]
    assert result["status"] == "blocked", result
    assert result["reason"].startswith("market_filter: stop price"), result
    assert emulator.orders() == []  # not even the close before it: never halfway through a plan
    assert not await was_claimed(redis, "bad-stop")
    assert await redis.get(keys.governor_permit("bad-stop")) is not None


async def test_a_position_too_small_to_close_is_blocked_before_the_claim(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.001})  # the minimum: half of it cannot be sent
    steps = json.dumps([{"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 50}])
    async with running_service():
        await add_plan(redis, "dust", steps=steps, action="PARTIAL_50")
        result = (await wait_for_results(redis, 1))["dust"]
    assert result["status"] == "blocked", result
    assert "below BTCUSDT's min quantity" in result["reason"]
    assert emulator.orders() == []
    assert not await was_claimed(redis, "dust")
