"""The exchange adapter: ccxt's binanceusdm against the emulator on loopback, Binance's rules included."""

import hashlib
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET
from redis.asyncio import Redis
from test_position_stream import requests

import quantum_apply_layer
from quantum_apply_layer import exchange as exchange_module
from quantum_apply_layer import metrics
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_limits import ENDPOINT_COSTS as EMULATED_COSTS
from quantum_apply_layer.emulator_state import CLIENT_ORDER_ID_PATTERN, Faults
from quantum_apply_layer.exchange import Exchange, ExchangeError, PositionModeRefused, client_order_id
from quantum_apply_layer.exchange_limits import (
    BLOCKED_UNTIL_KEY,
    ENDPOINT_COSTS,
    SharedLimiter,
)

TIMEOUT_S = 2.0


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ping_and_signed_positions(emulator: ExchangeEmulator, exchange: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5, "ETHUSDT": -1.2})
    await exchange.ping()
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.5)
    assert (await exchange.position("ETHUSDT")).amount == pytest.approx(-1.2)
    assert (await exchange.position("SOLUSDT")).amount == 0.0
    assert (await exchange.position("BTCUSDT")).mark_price == pytest.approx(65000)
    assert sample("apply_exchange_up") == 1


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [(EMULATOR_API_KEY, "wrong-secret", -1022), ("wrong-key", EMULATOR_API_SECRET, -2015)],
)
async def test_bad_credentials_are_auth_errors(
    emulator: ExchangeEmulator, key: str, secret: str, code: int
) -> None:
    adapter = Exchange(emulator.base_url, key, secret, TIMEOUT_S)
    try:
        with pytest.raises(ExchangeError) as failure:
            await adapter.open()  # the position mode check is signed: bad credentials show at start
    finally:
        await adapter.close()
    assert (failure.value.kind, failure.value.code) == ("auth", code)


async def test_reduce_only_close_changes_the_position(emulator: ExchangeEmulator, exchange: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    sent_before = sample("apply_orders_sent_total", type="MARKET")
    ack = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.2, "qh-plan-a-0")
    assert (ack.client_order_id, ack.status) == ("qh-plan-a-0", "FILLED")
    assert ack.filled_qty == pytest.approx(0.2)
    assert ack.exchange_order_id
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.3)
    assert sample("apply_orders_sent_total", type="MARKET") == sent_before + 1


async def test_client_ids_with_colons_and_slashes_survive_signing_and_lookup(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"XRPUSDT": 100})
    coid = client_order_id("2024-06-01T12:00:00/a.b", 0)
    sent = await exchange.send_reduce_only_market("XRPUSDT", "SELL", 10, coid)
    assert sent.client_order_id == coid == "qh-2024-06-01T12:00:00/a.b-0"
    assert await exchange.find_order("XRPUSDT", coid) == sent


async def test_quantity_is_cut_to_the_lot_step(emulator: ExchangeEmulator, exchange: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.12345, "qh-plan-b-0")
    assert [order.quantity for order in emulator.orders()] == [0.123]


async def test_quantity_rounding_to_zero_is_rejected_unsent(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.0004, "qh-plan-c-0")
    assert failure.value.kind == "rejected"
    assert emulator.orders() == []


@pytest.mark.parametrize(
    ("side", "quantity"), [("SELL", 0.6), ("BUY", 0.1)], ids=["would-flip", "would-grow"]
)
async def test_close_that_does_not_reduce_is_rejected(
    emulator: ExchangeEmulator, exchange: Exchange, side: Literal["BUY", "SELL"], quantity: float
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_reduce_only_market("BTCUSDT", side, quantity, "qh-d-0")
    assert (failure.value.kind, failure.value.code) == ("rejected", -2022)
    assert not failure.value.outcome_unknown
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.5)


async def test_stop_goes_to_the_algo_order_api_and_a_second_one_is_refused(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"ETHUSDT": 1})
    posts_before = _count("algo_new")
    ack = await exchange.send_stop_market_close("ETHUSDT", "SELL", 2900.004, "qh-plan-e-1")
    assert (ack.client_order_id, ack.status, ack.filled_qty) == ("qh-plan-e-1", "NEW", 0.0)
    assert _count("algo_new") == posts_before + 1  # one POST /fapi/v1/algoOrder
    [stop] = emulator.orders()
    assert (stop.type, stop.side, stop.close_position, stop.quantity) == ("STOP_MARKET", "SELL", True, None)
    assert stop.stop_price == 2900.0  # rounded to the 0.01 tick
    [standing] = await exchange.open_stops("ETHUSDT")
    assert (standing.client_algo_id, standing.trigger_price, standing.close_position) == (
        "qh-plan-e-1",
        2900.0,
        True,
    )
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_stop_market_close("ETHUSDT", "SELL", 2800, "qh-plan-e-2")
    assert (failure.value.kind, failure.value.code) == ("rejected", -4130)
    assert not failure.value.outcome_unknown
    await exchange.cancel_stop("ETHUSDT", standing)
    await exchange.cancel_stop("ETHUSDT", standing)  # gone already: nothing to do, no error
    assert await exchange.open_stops("ETHUSDT") == []
    assert (await exchange.position("ETHUSDT")).amount == pytest.approx(1)


async def test_a_filled_orders_id_is_accepted_again_as_on_binance(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    """Why a recovered plan must look its order up before sending: the id alone stops nothing."""
    emulator.set_positions({"BTCUSDT": 0.5})
    first = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-plan-f-0")
    second = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-plan-f-0")
    assert (first.status, second.status) == ("FILLED", "FILLED")
    assert first.exchange_order_id != second.exchange_order_id
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.3)


async def test_find_order_finds_orders_and_stops_and_answers_none_when_absent(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"SOLUSDT": -10})
    sent = await exchange.send_reduce_only_market("SOLUSDT", "BUY", 4, "qh-plan-g-0")
    stop = await exchange.send_stop_market_close("SOLUSDT", "BUY", 170, "qh-plan-g-1")
    rejected_before = sample("apply_exchange_errors_total", kind="rejected")
    assert await exchange.find_order("SOLUSDT", "qh-plan-g-0") == sent
    assert await exchange.find_stop("SOLUSDT", "qh-plan-g-1") == stop
    assert stop.status == "NEW"
    assert await exchange.find_order("SOLUSDT", "qh-plan-g-2") is None
    assert await exchange.find_stop("SOLUSDT", "qh-plan-g-2") is None
    assert sample("apply_exchange_errors_total", kind="rejected") == rejected_before  # -2013 is an answer


async def test_unknown_symbol_is_rejected_without_a_request(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_reduce_only_market("DOGEUSDT", "SELL", 1, "qh-plan-h-0")
    assert failure.value.kind == "rejected"
    assert emulator.orders() == []


async def test_an_exchange_refusal_keeps_its_code(emulator: ExchangeEmulator, exchange: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(
        Faults(fail_next=1, fail_code=-2019, fail_http_status=400, fail_msg="Margin is insufficient.")
    )
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-plan-i-0")
    assert (failure.value.kind, failure.value.code) == ("rejected", -2019)
    assert "Margin is insufficient." in str(failure.value)


async def test_a_server_error_is_never_retried(emulator: ExchangeEmulator, exchange: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(fail_next=1, fail_code=-1001, fail_http_status=503))
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-plan-j-0")
    assert (failure.value.kind, failure.value.code) == ("network", -1001)
    assert failure.value.outcome_unknown
    # One POST reached the emulator; a retry would have been let through and filled.
    assert [(o.client_order_id, o.status) for o in emulator.orders()] == [("qh-plan-j-0", "REJECTED")]
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.5)


async def test_a_dropped_connection_is_a_network_error(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(drop_next=1))
    with pytest.raises(ExchangeError) as failure:
        await exchange.send_stop_market_close("BTCUSDT", "SELL", 60000, "qh-plan-k-1")
    assert failure.value.kind == "network"
    assert sample("apply_exchange_up") == 0
    assert [o.status for o in emulator.orders()] == ["DROPPED"]


async def test_a_late_answer_is_a_timeout_and_the_lookup_settles_it(emulator: ExchangeEmulator) -> None:
    """The exchange filled the order but answered after the client gave up: only a lookup tells."""
    emulator.set_positions({"BTCUSDT": 0.5})
    adapter = Exchange(emulator.base_url, EMULATOR_API_KEY, EMULATOR_API_SECRET, timeout_s=0.2)
    try:
        await adapter.open()
        emulator.set_faults(Faults(latency_ms=1500))
        timeouts_before = sample("apply_exchange_errors_total", kind="timeout")
        with pytest.raises(ExchangeError) as failure:
            await adapter.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-plan-l-0")
        assert failure.value.kind == "timeout"
        assert failure.value.outcome_unknown
        assert sample("apply_exchange_errors_total", kind="timeout") == timeouts_before + 1
        assert sample("apply_exchange_up") == 0
        found = await adapter.find_order("BTCUSDT", "qh-plan-l-0")
    finally:
        await adapter.close()
    assert found is not None
    assert found.status == "FILLED"
    assert sample("apply_exchange_up") == 1


async def test_lookups_retry_network_failures_a_bounded_number_of_times() -> None:
    with socket_without_listener() as port:
        adapter = Exchange(f"http://127.0.0.1:{port}", "k", "s", TIMEOUT_S)
        attempts_before = _count("ping")
        try:
            with pytest.raises(ExchangeError) as failure:
                await adapter.ping()
        finally:
            await adapter.close()
    assert failure.value.kind == "network"
    assert _count("ping") == attempts_before + 3


def _count(endpoint: str) -> float:
    return sample("apply_exchange_request_duration_seconds_count", endpoint=endpoint)


@contextmanager
def socket_without_listener() -> Iterator[int]:
    """A loopback port held bound but not listening, so connections to it are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_client_order_id_is_readable_when_it_fits() -> None:
    assert client_order_id("7f3a-42", 0) == "qh-7f3a-42-0"
    assert client_order_id("a.b:c/d_e", 12) == "qh-a.b:c/d_e-12"


@pytest.mark.parametrize("plan_id", ["p" * 40, "plan with spaces", "plan#1", "ключ"])
def test_client_order_id_hashes_what_does_not_fit(plan_id: str) -> None:
    identifiers = [client_order_id(plan_id, step) for step in (0, 1, 10)]
    for identifier in identifiers:
        assert CLIENT_ORDER_ID_PATTERN.match(identifier), identifier
        assert identifier.startswith("qh-")
        assert len(identifier) <= 36
    assert len(set(identifiers)) == 3
    # The documented shape, so that an upgrade never renames the orders of plans already in flight.
    digest = hashlib.sha256(plan_id.encode()).hexdigest()
    assert identifiers == [f"qh-{digest[:31]}-0", f"qh-{digest[:31]}-1", f"qh-{digest[:30]}-10"]


def test_client_order_id_differs_between_long_plan_ids() -> None:
    assert client_order_id("x" * 40, 0) != client_order_id("x" * 41, 0)


def test_client_order_id_is_the_same_in_another_process() -> None:
    plan_id = "a-plan-id-far-too-long-for-binance-client-ids"
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from quantum_apply_layer.exchange import client_order_id; "
            "print(client_order_id(sys.argv[1], 3))",
            plan_id,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=_subprocess_env(),
    )
    assert other.stdout.strip() == client_order_id(plan_id, 3)


def _subprocess_env() -> dict[str, str]:
    source_root = str(Path(quantum_apply_layer.__file__).resolve().parents[1])
    # A different hash seed: Python's own str hash would differ, sha256 must not.
    return {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")])),
    }


def test_client_order_id_refuses_a_negative_step() -> None:
    with pytest.raises(ValueError, match="step_index"):
        client_order_id("plan", -1)


async def test_a_host_clock_ahead_of_the_exchange_still_trades(emulator: ExchangeEmulator) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(clock_offset_ms=-3_000))  # the host runs 3 s ahead: raw timestamps get -1021
    adapter = Exchange(emulator.base_url, EMULATOR_API_KEY, EMULATOR_API_SECRET, TIMEOUT_S)
    try:
        await adapter.open()
        assert (await adapter.position("BTCUSDT")).amount == pytest.approx(0.5)
        ack = await adapter.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-clock-0")
    finally:
        await adapter.close()
    assert ack.status == "FILLED"
    assert sample("apply_exchange_clock_offset_seconds") == pytest.approx(-3.0, abs=0.5)


async def test_a_clock_jump_resyncs_once_and_retries_only_the_lookup(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(clock_offset_ms=-4_000))  # after open(): the offset ccxt knows is stale
    assert (await exchange.position("BTCUSDT")).amount == pytest.approx(0.5)  # -1021, resync, once more
    emulator.set_faults(Faults(clock_offset_ms=4_000))
    with pytest.raises(ExchangeError) as refused:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-jump-0")
    assert (refused.value.kind, refused.value.code) == ("rejected", -1021)
    assert [o.status for o in emulator.orders()] == []  # refused before the book: nothing to look up
    ack = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-jump-1")  # resynced meanwhile
    assert ack.status == "FILLED"


async def test_an_order_never_waits_for_the_clock_the_next_lookup_measures_it(
    emulator: ExchangeEmulator, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    monkeypatch.setattr(exchange_module, "_CLOCK_REFRESH_S", 0.0)  # the clock is due at every call
    before = await requests(emulator)
    await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-clock-due-0")
    after_order = await requests(emulator)
    assert after_order - before == Counter({"WS order.place": 1})  # the order alone, after the claim
    await exchange.position("BTCUSDT")
    assert (await requests(emulator) - after_order)["GET /fapi/v1/time"] == 1


async def test_an_account_in_hedge_mode_is_refused_at_open(emulator: ExchangeEmulator) -> None:
    emulator.set_faults(Faults(hedge_mode=True))
    adapter = Exchange(emulator.base_url, EMULATOR_API_KEY, EMULATOR_API_SECRET, TIMEOUT_S)
    try:
        with pytest.raises(PositionModeRefused, match=r"hedge mode .* one-way mode"):
            await adapter.open()
    finally:
        await adapter.close()


def shared(emulator: ExchangeEmulator, redis: Redis) -> Exchange:
    return Exchange(
        emulator.base_url, EMULATOR_API_KEY, EMULATOR_API_SECRET, TIMEOUT_S, limiter=SharedLimiter(redis)
    )


async def test_a_429_holds_back_every_process_until_retry_after(
    emulator: ExchangeEmulator, redis: Redis
) -> None:
    first, second = shared(emulator, redis), shared(emulator, redis)
    try:
        await first.open()
        await second.open()
        emulator.set_positions({"BTCUSDT": 0.5})
        emulator.set_faults(Faults(weight_per_minute=10, window_scale=60))
        await first.position("BTCUSDT")
        await first.position("BTCUSDT")  # 10 of 10
        with pytest.raises(ExchangeError) as throttled:
            await first.position("BTCUSDT")
        assert (throttled.value.kind, throttled.value.code) == ("rate_limit", -1003)
        throttled_before = sample("apply_exchange_throttled_total", status="418")
        for adapter in (first, second):  # the other process too: the block is in Redis
            with pytest.raises(ExchangeError) as held:
                await adapter.position("BTCUSDT")
            assert (held.value.kind, "held back" in str(held.value)) == ("rate_limit", True)
        with pytest.raises(ExchangeError) as held_send:
            await second.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-held-0")
        assert not held_send.value.outcome_unknown  # nothing went out: no lookup needed
    finally:
        await first.close()
        await second.close()
    assert emulator.orders() == []
    assert sample("apply_exchange_throttled_total", status="418") == throttled_before  # never earned a ban
    assert 0 < int(await redis.pttl(BLOCKED_UNTIL_KEY)) <= 60_000 * 60


async def test_routine_calls_leave_headroom_for_emergency_closes(
    emulator: ExchangeEmulator, redis: Redis
) -> None:
    emulator.set_faults(Faults(weight_per_minute=1000))  # stated in exchangeInfo: routine 800, emergency 950
    adapter = shared(emulator, redis)
    try:
        await adapter.open()
        emulator.set_positions({"BTCUSDT": 0.5})
        await SharedLimiter(redis).observe(797, -1, -1)  # what the exchange says this IP has used
        with pytest.raises(ExchangeError) as held:
            await adapter.position("BTCUSDT")
        assert "weight budget used up" in str(held.value)
        assert (await adapter.position("BTCUSDT", emergency=True)).amount == pytest.approx(0.5)
        ack = await adapter.send_reduce_only_market("BTCUSDT", "SELL", 0.5, "qh-em-0", emergency=True)
    finally:
        await adapter.close()
    assert ack.status == "FILLED"
    assert sample("apply_exchange_used_weight") > 0  # fed by X-MBX-USED-WEIGHT-1M


def test_every_call_the_adapter_makes_has_a_cost_the_emulator_agrees_with() -> None:
    paths = {
        "ping": ("GET", "/fapi/v1/ping"),
        "time": ("GET", "/fapi/v1/time"),
        "exchange_info": ("GET", "/fapi/v1/exchangeInfo"),
        "position_mode": ("GET", "/fapi/v1/positionSide/dual"),
        "position_risk": ("GET", "/fapi/v3/positionRisk"),
        "order_query": ("GET", "/fapi/v1/order"),
        "order_new": ("POST", "/fapi/v1/order"),
        "algo_new": ("POST", "/fapi/v1/algoOrder"),
        "algo_query": ("GET", "/fapi/v1/algoOrder"),
        "algo_cancel": ("DELETE", "/fapi/v1/algoOrder"),
        "algo_open": ("GET", "/fapi/v1/openAlgoOrders"),
        "listen_key": ("POST", "/fapi/v1/listenKey"),
        "order_socket": ("GET", "/ws-fapi/v1"),
    }
    assert set(paths) == set(ENDPOINT_COSTS)
    for name, route in paths.items():
        ours, theirs = ENDPOINT_COSTS[name], EMULATED_COSTS[route]
        assert (ours.weight, ours.orders) == (theirs.weight, theirs.orders), name


async def test_an_answer_that_is_only_ack_is_looked_up_for_what_was_filled(
    emulator: ExchangeEmulator, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(fill_ratio=0.5))
    post_order = exchange._post_order  # by either door

    async def ack_only(params: dict[str, str]) -> Any:  # an exchange that answers before the order is worked
        return await post_order({**params, "newOrderRespType": "ACK"})

    monkeypatch.setattr(exchange, "_post_order", ack_only)
    lookups_before = _count("order_query")
    ack = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.2, "qh-ack-0")
    assert (ack.status, ack.filled_qty, ack.orig_qty) == ("EXPIRED", 0.1, 0.2)
    assert _count("order_query") == lookups_before + 1
    assert len(emulator.orders()) == 1
