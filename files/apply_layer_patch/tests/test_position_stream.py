"""Positions from the exchange's push, checked by its pull: the running service against the emulator's stream.

What is proven: after the claim nothing but the order (in the steady state a plan costs the exchange one
order and nothing else); a stale or dropped stream falls back to a lookup before the claim, and an
unreachable exchange claims nothing; a position changed at the exchange is seen before the next plan is
sized; a stream that lies is caught, counted, and never sizes an order above the real position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from conftest import ServiceFactory
from delay_proxy import DelayProxy
from plans import add_plan, grant_permits, plan_fields, wait_for_results
from prometheus_client import generate_latest
from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError

from quantum_apply_layer import exchange_limits, keys, metrics
from quantum_apply_layer.claim import ClaimResult
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.exchange_limits import Budget, HeldBack, SharedLimiter
from quantum_apply_layer.pipeline import PlanPipeline
from quantum_apply_layer.plan import Plan
from quantum_apply_layer.redis_guard import RedisUnavailable
from quantum_apply_layer.service import ApplyLayer
from quantum_apply_layer.stream_health import render_stream_health, stream_health

POSITION_RISK = "GET /fapi/v3/positionRisk"
ORDER = "WS order.place"  # a close goes by the websocket API while its connection is open
CLOSE_HALF = json.dumps([{"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 50}])
CLOSE_THEN_STOP = json.dumps(
    [
        {"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 50},
        {"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000},
    ]
)
# Long enough that no periodic reconciliation runs inside a test: every positionRisk seen is a plan's.
QUIET = {"APPLY_POSITION_MAX_AGE_S": "300"}


async def control(emulator: ExchangeEmulator, method: str, path: str, body: object = None) -> object:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{emulator.base_url}/_emulator/{path}", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def requests(emulator: ExchangeEmulator) -> Counter[str]:
    counts = await control(emulator, "GET", "requests")
    assert isinstance(counts, dict)
    return Counter({str(name): int(count) for name, count in counts.items()})


def without_stream_retries(spent: Counter[str]) -> Counter[str]:
    return Counter({name: n for name, n in spent.items() if "/listenKey" not in name and " /ws/" not in name})


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def lookups(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("apply_position_lookups_total", {"reason": reason})
    return value or 0.0


def held_back(limit: str) -> float:
    value = metrics.REGISTRY.get_sample_value("apply_exchange_held_back_total", {"limit": limit})
    return value or 0.0


def mismatches(symbol: str) -> float:
    value = metrics.REGISTRY.get_sample_value("apply_stream_position_mismatch_total", {"symbol": symbol})
    return value or 0.0


async def plan(
    redis: Redis,
    plan_id: str,
    safe_close_qty: float = 100.0,
    steps: str = CLOSE_HALF,
    action: str = "PARTIAL_50",
) -> None:
    await grant_permits(redis, plan_id, safe_close_qty=safe_close_qty)
    await add_plan(redis, plan_id, permits=False, steps=steps, action=action)


def quantity_of(emulator: ExchangeEmulator, client_order_id: str) -> float:
    (order,) = [o for o in emulator.orders() if o.client_order_id == client_order_id]
    assert order.quantity is not None
    return order.quantity


@pytest.fixture
async def proxy(emulator: ExchangeEmulator) -> AsyncIterator[DelayProxy]:
    """The emulator behind a proxy the test can cut: the exchange unreachable, REST and stream alike."""
    port = int(emulator.base_url.rsplit(":", 1)[1])
    delay_proxy = DelayProxy(port, 0.0)
    await delay_proxy.start()
    yield delay_proxy
    await delay_proxy.stop()


def health() -> dict[str, object]:
    """What `status` shows, from the metrics the service exports."""
    return stream_health(generate_latest(metrics.REGISTRY).decode())


def gate_samples(since: str) -> tuple[float, float]:
    """apply_gate_seconds{since, order="close"}: how many plans, and their seconds in all."""
    labels = {"since": since, "order": "close"}
    return (
        metrics.REGISTRY.get_sample_value("apply_gate_seconds_count", labels) or 0.0,
        metrics.REGISTRY.get_sample_value("apply_gate_seconds_sum", labels) or 0.0,
    )


def order_round_trips() -> float:
    """The seconds that POST /fapi/v1/order took in all, from the call to the answer."""
    labels = {"endpoint": "order_new"}
    return metrics.REGISTRY.get_sample_value("apply_exchange_request_duration_seconds_sum", labels) or 0.0


async def fresh(service: ApplyLayer) -> ApplyLayer:
    await until(service.positions.fresh)
    return service


async def test_in_the_steady_state_a_plan_costs_one_order_and_no_lookup(
    redis: Redis,
    emulator: ExchangeEmulator,
    running_service: ServiceFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    passed_the_limiter: list[str] = []
    reserve = SharedLimiter.reserve

    async def spied(limiter: SharedLimiter, endpoint: str, budget: Budget) -> HeldBack | None:
        passed_the_limiter.append(endpoint)
        return await reserve(limiter, endpoint, budget)

    monkeypatch.setattr(SharedLimiter, "reserve", spied)
    gated_before = gate_samples("plan")
    async with running_service(**QUIET) as service:
        await fresh(service)
        before = await requests(emulator)
        for n in range(5):
            await plan(redis, f"steady-{n}")
            await wait_for_results(redis, n + 1)
        spent = await requests(emulator) - before
    assert spent == Counter({ORDER: 5}), spent
    # The claim counted each order in the exchange's budget: no trip to Redis between it and the order,
    # and each order counted once (the exchange's own count, 5, raises ours to no more than 5).
    assert "order_new" not in passed_the_limiter
    assert int(await redis.hget(exchange_limits.ORDERS_10S_KEY, "count") or 0) == 5
    # Each plan sized from the position its predecessor left: 0.8 -> 0.4 -> 0.2 -> 0.1 -> 0.05 -> 0.025.
    assert [quantity_of(emulator, f"qh-steady-{n}-0") for n in range(5)] == [0.4, 0.2, 0.1, 0.05, 0.025]
    # Their permits were there already: each plan's gate is measured from the start of its handling.
    assert gate_samples("plan")[0] - gated_before[0] == 5


async def test_what_the_gate_adds_ends_at_the_order_write_not_at_its_answer(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory, proxy: DelayProxy
) -> None:
    """apply_gate_seconds, 50 ms from the exchange: from the permit's notification to the order's bytes
    written is local work, whatever the distance; each order's own round trip takes 100 ms more. Two
    plans sending at once each get their own stamp."""
    emulator.set_positions({"BTCUSDT": 0.8, "ETHUSDT": 4.0})
    proxy.delay_s = 0.05  # each way, for every connection made from now on
    gated_before, trips_before = gate_samples("permit"), order_round_trips()
    url = f"http://127.0.0.1:{proxy.port}"
    async with running_service(APPLY_EXCHANGE_URL=url, APPLY_PERMIT_TIMEOUT_MS="5000", **QUIET) as service:
        await fresh(service)
        for plan_id, symbol in (("far-btc", "BTCUSDT"), ("far-eth", "ETHUSDT")):
            await add_plan(redis, plan_id, False, steps=CLOSE_HALF, action="PARTIAL_50", symbol=symbol)
            await until(lambda plan_id=plan_id: service.permits.awaited(keys.p33_permit(plan_id)))
        assert emulator.orders() == []
        await grant_permits(redis, "far-btc", safe_close_qty=100.0)
        await grant_permits(redis, "far-eth", safe_close_qty=100.0)
        found = await wait_for_results(redis, 2)
    assert [found[plan_id]["status"] for plan_id in ("far-btc", "far-eth")] == ["executed"] * 2, found
    count, gated = (now - then for now, then in zip(gate_samples("permit"), gated_before, strict=True))
    assert count == 2
    assert 0 < gated < 2 * 0.05, gated  # a few ms each here: never a round trip
    assert order_round_trips() - trips_before >= 2 * 0.1


async def test_an_order_written_before_redis_failed_a_later_step_is_measured_once(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close went out, then Redis failed the claim before the stop (the plan stays pending): the
    close's gate is measured all the same, once. The plan's resumption finds the close sent and sends the
    stop: that stop is not the plan's first order, so it adds no measure."""
    emulator.set_positions({"BTCUSDT": 0.8})
    tries: list[str] = []
    claim_again = PlanPipeline._claim_again

    async def redis_gone_once(pipeline: PlanPipeline, plan: Plan, entry_id: str) -> ClaimResult:
        tries.append(entry_id)
        if len(tries) == 1:
            raise RedisUnavailable("claim: Redis went away")
        return await claim_again(pipeline, plan, entry_id)

    monkeypatch.setattr(PlanPipeline, "_claim_again", redis_gone_once)
    gated_before = gate_samples("plan")[0]
    async with running_service(**QUIET) as service:
        await fresh(service)
        await plan(redis, "close-then-gone", steps=CLOSE_THEN_STOP, action="PARTIAL_50")
        result = (await wait_for_results(redis, 1))["close-then-gone"]
    assert result["status"] == "executed", result
    assert len(tries) == 2  # taken up again after the failure
    sent = [o.client_order_id for o in emulator.orders()]
    assert sent == ["qh-close-then-gone-0", "qh-close-then-gone-1"], sent
    assert gate_samples("plan")[0] == gated_before + 1


async def test_orders_the_exchange_budget_cannot_take_are_blocked_before_the_claim(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)
        held_before = held_back("blocked")
        await SharedLimiter(redis).block(30)  # another process earned a 429: nobody sends for 30 s
        await plan(redis, "banned")
        result = (await wait_for_results(redis, 1))["banned"]
    assert result["status"] == "blocked", result
    assert result["reason"].startswith("held_back: a Retry-After holds every process"), result
    assert emulator.orders() == []
    assert await redis.exists(keys.governor_permit("banned"), keys.p33_permit("banned")) == 2  # kept
    mark = json.loads(await redis.get(keys.dedupe_mark("banned")))
    assert "claimed_at" not in mark, mark  # recorded, never claimed
    assert held_back("blocked") == held_before + 1


async def test_a_dropped_stream_falls_back_to_a_lookup_before_the_claim(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)
        assert health()["connected"] is True
        await control(emulator, "POST", "user_stream", {"mode": "down"})
        await until(lambda: not service.positions.connected)
        assert health()["connected"] is False
        emulator.set_positions({"BTCUSDT": 0.3})  # changed while nobody was listening
        before, looked_up = await requests(emulator), lookups("stream_down")
        await plan(redis, "after-drop")
        result = (await wait_for_results(redis, 1))["after-drop"]
        spent = await requests(emulator) - before
    assert result["status"] == "executed", result
    assert quantity_of(emulator, "qh-after-drop-0") == 0.15  # half of what the exchange holds, not of 0.8
    # The plan's requests; the stream's own tries to come back (a listen key, a refused websocket) run
    # beside it on their backoff, and on a slow machine one may fall inside the plan.
    assert without_stream_retries(spent) == Counter({POSITION_RISK: 1, ORDER: 1})
    assert lookups("stream_down") == looked_up + 1
    assert "user data stream: DOWN" in render_stream_health(health())


async def test_a_stream_that_comes_back_is_reconciled_before_it_is_trusted_again(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)
        await control(emulator, "POST", "user_stream", {"mode": "down"})
        await until(lambda: not service.positions.connected)
        emulator.set_positions({"BTCUSDT": 0.6})  # missed while down: only a reconciliation can tell
        await control(emulator, "POST", "user_stream", {"mode": "live"})
        await fresh(service)  # reconnected (a new key, a new connection) and reconciled
        before = await requests(emulator)
        await plan(redis, "back")
        result = (await wait_for_results(redis, 1))["back"]
        spent = await requests(emulator) - before
    assert result["status"] == "executed", result
    assert quantity_of(emulator, "qh-back-0") == 0.3
    assert spent == Counter({ORDER: 1})


async def test_a_stale_stream_falls_back_to_a_lookup_before_the_next_plan(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)
        await control(emulator, "POST", "user_stream", {"mode": "stale"})  # connected, silent
        await plan(redis, "first")
        await wait_for_results(redis, 1)  # 0.4 closed; the stream never says so
        emulator.set_positions({"BTCUSDT": 0.1})  # and a manual close it does not say either
        before, looked_up = await requests(emulator), lookups("awaiting_fill")
        await plan(redis, "second")
        result = (await wait_for_results(redis, 2))["second"]
        spent = await requests(emulator) - before
        assert service.positions.connected  # only its own order, never back, told it the stream was stale
    assert result["status"] == "executed", result
    assert quantity_of(emulator, "qh-second-0") == 0.05  # half of 0.1, read by REST
    assert spent == Counter({POSITION_RISK: 1, ORDER: 1})
    assert lookups("awaiting_fill") == looked_up + 1


@pytest.mark.parametrize(
    ("switch", "status", "reason"),
    [(None, "error", "position_unknown"), ("true", "halted", "kill switch global:halted")],
    ids=["running", "halted"],
)
async def test_an_unreachable_exchange_with_the_stream_down_claims_nothing(
    redis: Redis,
    emulator: ExchangeEmulator,
    running_service: ServiceFactory,
    proxy: DelayProxy,
    switch: str | None,
    status: str,
    reason: str,
) -> None:
    """Fail closed: nothing claimed. While the switch halts, the outage is not the reason: the halt is."""
    emulator.set_positions({"BTCUSDT": 0.8})
    if switch is not None:
        await redis.set(keys.GLOBAL_SWITCH, switch)
    url = f"http://127.0.0.1:{proxy.port}"
    async with running_service(APPLY_EXCHANGE_URL=url, **QUIET) as service:
        await fresh(service)
        proxy.cut()
        await until(lambda: not service.positions.connected)
        await plan(redis, "blind")
        result = (await wait_for_results(redis, 1))["blind"]
        proxy.restore()
    assert result["status"] == status, result
    assert result["reason"].startswith(reason), result
    assert emulator.orders() == []
    assert "claimed_at" not in json.loads(await redis.get(keys.dedupe_mark("blind")))  # never claimed
    assert await redis.get(keys.governor_permit("blind")) is not None  # permits not consumed
    assert await redis.get(keys.p33_permit("blind")) is not None


@pytest.mark.parametrize("left", [0.2, 0.0], ids=["manual-close", "liquidated"])
async def test_a_position_changed_at_the_exchange_is_seen_before_the_next_plan(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory, left: float
) -> None:
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)
        emulator.set_positions({"BTCUSDT": left})  # pushed as an ACCOUNT_UPDATE
        await until(lambda: getattr(service.positions.usable("BTCUSDT"), "amount", None) == left)
        before = await requests(emulator)
        await plan(redis, "next")
        result = (await wait_for_results(redis, 1))["next"]
        spent = await requests(emulator) - before
    assert spent[POSITION_RISK] == 0  # the push said it all
    if left:
        assert result["status"] == "executed", result
        assert quantity_of(emulator, "qh-next-0") == left / 2
    else:
        assert result["status"] == "skipped", result
        assert emulator.orders() == []


async def test_a_stream_that_lies_is_caught_counted_and_never_sizes_above_the_real_position(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    full = json.dumps([{"step": "CLOSE_FULL", "type": "market_reduce_only", "pct": 100}])
    async with running_service(**QUIET) as service:
        await fresh(service)
        counted = mismatches("BTCUSDT")
        await control(emulator, "POST", "user_stream/push", {"BTCUSDT": 2.0})  # the exchange holds 0.5
        await until(lambda: mismatches("BTCUSDT") == counted + 1)  # the reconciliation it set off
        await control(emulator, "POST", "user_stream/push", {"BTCUSDT": 3.0})
        await plan(redis, "after-lie", steps=full, action="FULL_CLOSE_PROPOSED")
        result = (await wait_for_results(redis, 1))["after-lie"]
    assert result["status"] == "executed", result
    assert quantity_of(emulator, "qh-after-lie-0") == 0.5  # the real position, never the 2.0 or 3.0
    assert mismatches("BTCUSDT") >= counted + 1
    assert emulator.position_amount("BTCUSDT") == 0.0


async def test_a_redis_pool_with_no_connection_left_leaves_the_plan_pending_and_unclaimed(
    redis: Redis, emulator: ExchangeEmulator, running_service: ServiceFactory
) -> None:
    """redis-py refuses a connection beyond its pool's size instead of waiting for one. A plan that cannot
    get its claim's connection is left pending (taken up again), never claimed, never counted as poison."""
    emulator.set_positions({"BTCUSDT": 0.8})
    async with running_service(**QUIET) as service:
        await fresh(service)  # the book vouches: preparing the plan needs no Redis
        await grant_permits(redis, "dry", safe_close_qty=100.0)
        fields = plan_fields("dry", steps=CLOSE_HALF, action="PARTIAL_50")
        pool = service.redis.connection_pool
        taken = []
        try:
            with contextlib.suppress(MaxConnectionsError):
                while True:
                    taken.append(await pool.get_connection())  # type: ignore[no-untyped-call]
            with pytest.raises(RedisUnavailable, match="claim connection"):
                await service.pipeline.handle(
                    "1-0", {name.encode(): value.encode() for name, value in fields.items()}, False
                )
        finally:
            for connection in taken:
                await pool.release(connection)
    assert await redis.exists(keys.dedupe_mark("dry")) == 0
    assert await redis.get(keys.governor_permit("dry")) is not None  # permits not consumed
    assert emulator.orders() == []
