"""The exchange emulator over real HTTP on loopback: Binance's signing, rules and error codes, the control
endpoints, and the console script's refusal to start without credentials or on a public address."""

import asyncio
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET

import quantum_apply_layer
from quantum_apply_layer import emulator_state
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_state import BinanceError, ExchangeState, Faults


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def signed(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    params: Mapping[str, str],
    *,
    key: str | None = EMULATOR_API_KEY,
    secret: str = EMULATOR_API_SECRET,
    timestamp_ms: int | None = None,
) -> tuple[int, Any]:
    """A request signed the way Binance documents it: HMAC-SHA256 of the form-encoded parameters."""
    stamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    payload = urlencode({**params, "timestamp": stamp, "recvWindow": 5000})
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": key} if key is not None else {}
    body = f"{payload}&signature={signature}"
    if method == "GET":
        response = await http.get(f"{url}?{body}", headers=headers)
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await http.request(method, url, data=body, headers=headers)
    async with response:
        return response.status, await response.json()


def market_close(symbol: str, side: str, quantity: str, client_id: str) -> dict[str, str]:
    return {
        "symbol": symbol,
        "side": side,
        "type": "MARKET",
        "quantity": quantity,
        "reduceOnly": "true",
        "newClientOrderId": client_id,
    }


def stop_close(symbol: str, side: str, trigger_price: str, client_id: str) -> dict[str, str]:
    """A protective stop as the algo order API takes it."""
    return {
        "algoType": "CONDITIONAL",
        "symbol": symbol,
        "side": side,
        "type": "STOP_MARKET",
        "triggerPrice": trigger_price,
        "closePosition": "true",
        "clientAlgoId": client_id,
    }


async def test_public_endpoints_answer_like_binance(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emulator.base_url}/fapi/v1/ping") as response:
        assert (response.status, await response.json()) == (200, {})
    async with http.get(f"{emulator.base_url}/fapi/v1/time") as response:
        assert isinstance((await response.json())["serverTime"], int)
    async with http.get(f"{emulator.base_url}/fapi/v1/exchangeInfo") as response:
        symbols = (await response.json())["symbols"]
    assert {entry["symbol"] for entry in symbols} == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"}
    for entry in symbols:
        assert (entry["status"], entry["contractType"], entry["marginAsset"]) == (
            "TRADING",
            "PERPETUAL",
            "USDT",
        )
        assert {f["filterType"] for f in entry["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE"}


async def test_info_names_the_emulator(emulator: ExchangeEmulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{emulator.base_url}/_emulator/info") as response:
        body = await response.json()
    assert body["emulator"] == "quantum-exchange-emulator"
    assert body["version"] == quantum_apply_layer.__version__


@pytest.mark.parametrize(
    ("credentials", "status", "code"),
    [
        ({"key": None}, 401, -2014),
        ({"key": "someone-else"}, 401, -2015),
        ({"secret": "not-the-secret"}, 400, -1022),
        ({"timestamp_ms": int(time.time() * 1000) - 3_600_000}, 400, -1021),
    ],
    ids=["no-key", "unknown-key", "bad-signature", "stale-timestamp"],
)
async def test_signed_endpoints_refuse_bad_credentials(
    emulator: ExchangeEmulator,
    http: aiohttp.ClientSession,
    credentials: dict[str, Any],
    status: int,
    code: int,
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    answer = await signed(
        http,
        "POST",
        f"{emulator.base_url}/fapi/v1/order",
        market_close("BTCUSDT", "SELL", "0.1", "qh-auth-0"),
        **credentials,
    )
    assert answer[0] == status
    assert answer[1]["code"] == code
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.5)


async def test_order_rules_use_binance_error_codes(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    order_url = f"{emulator.base_url}/fapi/v1/order"
    cases: list[tuple[dict[str, str], int]] = [
        (market_close("DOGEUSDT", "SELL", "1", "qh-r-0"), -1121),  # unknown symbol
        ({**market_close("BTCUSDT", "SELL", "0.1", "qh-r-1"), "quantity": ""}, -1102),  # missing quantity
        (market_close("BTCUSDT", "SELL", "0.0001", "qh-r-2"), -1111),  # finer than the step size
        (market_close("BTCUSDT", "SELL", "0.1", "bad id with spaces"), -1100),
        (market_close("BTCUSDT", "SELL", "0.1", "x" * 37), -1100),  # longer than 36
        ({**market_close("BTCUSDT", "SELL", "0.1", "qh-r-5"), "closePosition": "true"}, -1106),
        ({**market_close("BTCUSDT", "SELL", "0.1", "qh-r-6"), "type": "LIMIT"}, -1116),  # not emulated
    ]
    for params, code in cases:
        status, body = await signed(http, "POST", order_url, params)
        assert (status, body["code"]) == (400, code), params
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.5)


async def test_stop_rules_use_binance_error_codes(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    order_url = f"{emulator.base_url}/fapi/v1/algoOrder"
    cases: list[tuple[dict[str, str], int]] = [
        (stop_close("BTCUSDT", "SELL", "70000", "qh-s-0"), -2021),  # above the 65000 mark: would trigger now
        (stop_close("BTCUSDT", "BUY", "60000", "qh-s-1"), -2021),  # below the mark: would trigger now
        (stop_close("BTCUSDT", "SELL", "60000.05", "qh-s-2"), -4014),  # off the 0.10 tick
        ({**stop_close("BTCUSDT", "SELL", "60000", "qh-s-3"), "quantity": "0.1"}, -1106),
        ({**stop_close("BTCUSDT", "SELL", "60000", "qh-s-4"), "reduceOnly": "true"}, -1106),
        ({**stop_close("BTCUSDT", "SELL", "60000", "qh-s-5"), "triggerPrice": ""}, -1102),
        ({**stop_close("BTCUSDT", "SELL", "60000", "qh-s-6"), "algoType": ""}, -1102),
    ]
    for params, code in cases:
        status, body = await signed(http, "POST", order_url, params)
        assert (status, body["code"]) == (400, code), params
    assert {order.status for order in emulator.orders()} == {"REJECTED"}


async def test_an_open_stop_holds_its_client_id_and_is_found_by_it(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    algo_url = f"{emulator.base_url}/fapi/v1/algoOrder"
    status, stop = await signed(http, "POST", algo_url, stop_close("BTCUSDT", "SELL", "60000", "qh-st-1"))
    assert status == 200
    assert (stop["orderType"], stop["algoStatus"], stop["triggerPrice"], stop["closePosition"]) == (
        "STOP_MARKET",
        "NEW",
        "60000.00",
        True,
    )
    # A take-profit in the other direction holds the same id: refused while the stop is open.
    duplicate = {**stop_close("BTCUSDT", "SELL", "70000", "qh-st-1"), "type": "TAKE_PROFIT_MARKET"}
    assert (await signed(http, "POST", algo_url, duplicate))[1]["code"] == -4116
    status, found = await signed(http, "GET", algo_url, {"clientAlgoId": "qh-st-1"})
    assert (status, found["algoId"], found["algoStatus"]) == (200, stop["algoId"], "NEW")
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.5)


async def test_conditional_orders_are_refused_on_the_order_endpoint(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    legacy = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "stopPrice": "60000",
        "closePosition": "true",
        "newClientOrderId": "qh-legacy-0",
    }
    status, body = await signed(http, "POST", f"{emulator.base_url}/fapi/v1/order", legacy)
    assert (status, body["code"]) == (400, -4120)
    assert emulator.open_algo_orders("BTCUSDT") == []


async def test_a_second_close_position_stop_is_refused_until_the_first_is_cancelled(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    algo_url = f"{emulator.base_url}/fapi/v1/algoOrder"
    first = await signed(http, "POST", algo_url, stop_close("BTCUSDT", "SELL", "60000", "qh-two-0"))
    second = await signed(http, "POST", algo_url, stop_close("BTCUSDT", "SELL", "61000", "qh-two-1"))
    assert (first[0], second[0], second[1]["code"]) == (200, 400, -4130)
    cancelled = await signed(http, "DELETE", algo_url, {"clientAlgoId": "qh-two-0"})
    assert cancelled == (
        200,
        {"algoId": first[1]["algoId"], "clientAlgoId": "qh-two-0", "code": "200", "msg": "success"},
    )
    again = await signed(http, "DELETE", algo_url, {"clientAlgoId": "qh-two-0"})
    assert (again[0], again[1]["code"]) == (400, -2011)
    assert (await signed(http, "POST", algo_url, stop_close("BTCUSDT", "SELL", "61000", "qh-two-1")))[
        0
    ] == 200
    status, listed = await signed(
        http, "GET", f"{emulator.base_url}/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"}
    )
    assert (status, [(o["clientAlgoId"], o["triggerPrice"]) for o in listed]) == (
        200,
        [("qh-two-1", "61000.00")],
    )


async def test_market_orders_answer_ack_or_result_and_fill_what_the_book_allows(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "1"})
    url = f"{emulator.base_url}/fapi/v1/order"
    status, ack = await signed(http, "POST", url, market_close("BTCUSDT", "SELL", "0.1", "qh-ack-0"))
    assert (status, ack["status"], ack["executedQty"]) == (200, "NEW", "0")  # ACK is Binance's default
    found = await signed(http, "GET", url, {"symbol": "BTCUSDT", "origClientOrderId": "qh-ack-0"})
    assert (found[1]["status"], found[1]["executedQty"]) == ("FILLED", "0.100")
    emulator.set_faults(Faults(fill_ratio=0.5))
    result_close = {**market_close("BTCUSDT", "SELL", "0.4", "qh-part-0"), "newOrderRespType": "RESULT"}
    status, partial = await signed(http, "POST", url, result_close)
    assert (status, partial["status"], partial["origQty"], partial["executedQty"]) == (
        200,
        "EXPIRED",
        "0.400",
        "0.200",
    )
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.7)
    emulator.set_faults(Faults(price_protect_next=1))
    refused = await signed(http, "POST", url, market_close("BTCUSDT", "SELL", "0.1", "qh-pp-0"))
    accepted = await signed(http, "POST", url, market_close("BTCUSDT", "SELL", "0.1", "qh-pp-1"))
    assert (refused[0], refused[1]["code"], accepted[0]) == (400, -4131, 200)


async def test_limits_count_weight_and_orders_then_429_then_a_418_ban(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "1"})
    emulator.set_faults(Faults(weight_per_minute=12, ban_seconds=300, window_scale=60))
    base = emulator.base_url
    async with http.get(f"{base}/fapi/v1/ping") as response:
        assert response.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    async with http.get(f"{base}/fapi/v3/positionRisk") as response:  # unsigned: refused, still counted
        assert response.headers["X-MBX-USED-WEIGHT-1M"] == "6"
    order = market_close("BTCUSDT", "SELL", "0.1", "qh-lim-0")
    async with http.post(f"{base}/fapi/v1/order", data=order) as response:
        assert (response.headers["X-MBX-ORDER-COUNT-10S"], response.headers["X-MBX-ORDER-COUNT-1M"]) == (
            "1",
            "1",
        )
        assert response.headers["X-MBX-USED-WEIGHT-1M"] == "6"  # a new order costs no IP weight
    async with http.get(f"{base}/fapi/v2/positionRisk") as response:
        assert response.status != 429
    async with http.get(f"{base}/fapi/v2/positionRisk") as response:
        body = await response.json()
        assert (response.status, body["code"]) == (429, -1003)
        assert int(response.headers["Retry-After"]) > 0
    async with http.get(f"{base}/fapi/v1/ping") as response:  # going on after a 429
        body = await response.json()
        assert (response.status, body["code"]) == (418, -1003)
        assert 290 <= int(response.headers["Retry-After"]) <= 300
    async with http.get(f"{base}/fapi/v1/time") as response:
        assert response.status == 418  # every call, for the whole ban
    async with http.get(f"{base}/_emulator/info") as response:
        assert response.status == 200  # the emulator's own endpoints are not Binance's


async def test_order_count_limit_is_per_ten_seconds(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "1"})
    emulator.set_faults(Faults(orders_per_10s=2, window_scale=60))
    url = f"{emulator.base_url}/fapi/v1/order"
    answers = [
        await signed(http, "POST", url, market_close("BTCUSDT", "SELL", "0.1", f"qh-oc-{i}"))
        for i in range(3)
    ]
    assert [(status, body.get("code")) for status, body in answers] == [
        (200, None),
        (200, None),
        (429, -1015),
    ]
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.8)


async def test_a_clock_offset_moves_server_time_and_the_recv_window(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_faults(Faults(clock_offset_ms=-3_000))  # the host runs 3 s ahead of the exchange
    async with http.get(f"{emulator.base_url}/fapi/v1/time") as response:
        server_time = (await response.json())["serverTime"]
    assert server_time < int(time.time() * 1000) - 2_000
    url = f"{emulator.base_url}/fapi/v3/positionRisk"
    assert (await signed(http, "GET", url, {}))[1]["code"] == -1021
    assert (await signed(http, "GET", url, {}, timestamp_ms=server_time))[0] == 200


async def test_hedge_mode_shows_two_sides_and_refuses_reduce_only(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_faults(Faults(hedge_mode=True))
    emulator.set_positions({"BTCUSDT": "0.5"})
    base = emulator.base_url
    assert await signed(http, "GET", f"{base}/fapi/v1/positionSide/dual", {}) == (
        200,
        {"dualSidePosition": True},
    )
    _, rows = await signed(http, "GET", f"{base}/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
    assert [(row["positionSide"], row["positionAmt"]) for row in rows] == [
        ("LONG", "0.500"),
        ("SHORT", "0.000"),
    ]
    status, body = await signed(
        http, "POST", f"{base}/fapi/v1/order", market_close("BTCUSDT", "SELL", "0.1", "h0")
    )
    assert (status, body["code"]) == (400, -1106)
    hedge_close = {**market_close("BTCUSDT", "SELL", "0.1", "h1"), "positionSide": "LONG"}
    del hedge_close["reduceOnly"]
    assert (await signed(http, "POST", f"{base}/fapi/v1/order", hedge_close))[0] == 200
    emulator.set_faults(Faults())
    assert await signed(http, "GET", f"{base}/fapi/v1/positionSide/dual", {}) == (
        200,
        {"dualSidePosition": False},
    )


async def test_order_log_keeps_every_post_in_arrival_order(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"ETHUSDT": "-2"})
    base = emulator.base_url
    await signed(http, "POST", f"{base}/fapi/v1/order", market_close("ETHUSDT", "BUY", "0.5", "qh-log-0"))
    await signed(http, "POST", f"{base}/fapi/v1/order", market_close("ETHUSDT", "SELL", "0.5", "qh-log-1"))
    await signed(http, "POST", f"{base}/fapi/v1/algoOrder", stop_close("ETHUSDT", "BUY", "3500", "qh-log-2"))
    async with http.get(f"{base}/_emulator/orders") as response:
        orders = (await response.json())["orders"]
    assert [(o["clientOrderId"], o["type"], o["status"], o["code"]) for o in orders] == [
        ("qh-log-0", "MARKET", "FILLED", None),
        ("qh-log-1", "MARKET", "REJECTED", -2022),  # a sell would grow the short
        ("qh-log-2", "STOP_MARKET", "NEW", None),
    ]
    assert (orders[0]["quantity"], orders[0]["reduceOnly"]) == (0.5, True)
    assert (orders[2]["stopPrice"], orders[2]["closePosition"]) == (3500, True)
    times = [o["receivedMonotonic"] for o in orders]
    assert times == sorted(times)


async def test_position_risk_v2_lists_every_symbol_and_v3_only_open_ones(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"SOLUSDT": "-7"})
    status_v2, v2 = await signed(http, "GET", f"{emulator.base_url}/fapi/v2/positionRisk", {})
    status_v3, v3 = await signed(http, "GET", f"{emulator.base_url}/fapi/v3/positionRisk", {})
    assert (status_v2, status_v3) == (200, 200)
    assert len(v2) == 5
    assert [(row["symbol"], row["positionAmt"]) for row in v3] == [("SOLUSDT", "-7")]


async def test_order_lookup_by_client_id_and_missing_order(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    await signed(
        http, "POST", f"{emulator.base_url}/fapi/v1/order", market_close("BTCUSDT", "SELL", "0.1", "qh-q-0")
    )
    found = await signed(
        http,
        "GET",
        f"{emulator.base_url}/fapi/v1/order",
        {"symbol": "BTCUSDT", "origClientOrderId": "qh-q-0"},
    )
    missing = await signed(
        http,
        "GET",
        f"{emulator.base_url}/fapi/v1/order",
        {"symbol": "BTCUSDT", "origClientOrderId": "qh-q-1"},
    )
    assert (found[0], found[1]["status"], found[1]["executedQty"]) == (200, "FILLED", "0.100")
    assert missing == (400, {"code": -2013, "msg": "Order does not exist."})


async def test_control_endpoints_set_positions_marks_faults_and_reset(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    base = emulator.base_url
    async with http.post(f"{base}/_emulator/positions", json={"BTCUSDT": 0.5, "XRPUSDT": -100}) as response:
        assert (await response.json())["XRPUSDT"] == -100
    async with http.post(f"{base}/_emulator/positions", json={"DOGEUSDT": 1}) as response:
        assert response.status == 400
    async with http.post(f"{base}/_emulator/marks", json={"BTCUSDT": 50000}) as response:
        assert response.status == 200
    # With the mark at 50000 a sell stop at 55000 would trigger at once.
    status, body = await signed(
        http, "POST", f"{base}/fapi/v1/algoOrder", stop_close("BTCUSDT", "SELL", "55000", "s")
    )
    assert (status, body["code"]) == (400, -2021)
    async with http.post(f"{base}/_emulator/faults", json={"fail_next": "two"}) as response:
        assert response.status == 400
    async with http.post(f"{base}/_emulator/faults", json={"latency_ms": 5}) as response:
        assert (await response.json())["latency_ms"] == 5
    async with http.post(f"{base}/_emulator/reset") as response:
        assert response.status == 200
    async with http.get(f"{base}/_emulator/positions") as response:
        assert set((await response.json()).values()) == {0}
    async with http.get(f"{base}/_emulator/faults") as response:
        assert (await response.json())["latency_ms"] == 0
    async with http.get(f"{base}/_emulator/orders") as response:
        assert (await response.json())["orders"] == []


async def test_fail_fault_refuses_the_next_posts_without_applying_them(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.set_positions({"BTCUSDT": "0.5"})
    emulator.set_faults(Faults(fail_next=2, fail_code=-1008, fail_http_status=503, fail_msg="Server is busy"))
    url = f"{emulator.base_url}/fapi/v1/order"
    answers = [
        await signed(http, "POST", url, market_close("BTCUSDT", "SELL", "0.1", f"qh-f-{i}")) for i in range(3)
    ]
    assert [(status, body.get("code")) for status, body in answers] == [
        (503, -1008),
        (503, -1008),
        (200, None),
    ]
    assert emulator.position_amount("BTCUSDT") == pytest.approx(0.4)


def test_history_forgets_the_oldest_orders_beyond_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_state, "HISTORY_LIMIT", 2)
    state = ExchangeState()
    state.set_positions({"BTCUSDT": 1})
    for index in range(3):
        state.new_order(market_close("BTCUSDT", "SELL", "0.1", f"qh-h-{index}"), received=float(index))
    assert [entry.client_order_id for entry in state.order_log()] == ["qh-h-1", "qh-h-2"]
    with pytest.raises(BinanceError) as missing:
        state.query_order({"symbol": "BTCUSDT", "origClientOrderId": "qh-h-0"})
    assert missing.value.code == -2013
    assert state.query_order({"symbol": "BTCUSDT", "origClientOrderId": "qh-h-2"})["status"] == "FILLED"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cli_env(**extra: str) -> dict[str, str]:
    source_root = str(Path(quantum_apply_layer.__file__).resolve().parents[1])
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "CREDENTIALS_DIRECTORY")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    return {**env, **extra}


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantum_apply_layer.emulator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_to_start_without_credentials() -> None:
    result = _run_cli("--port", str(_free_port()), env=_cli_env())
    assert result.returncode == 2
    assert "refusing to start" in result.stderr
    assert "BINANCE_API_KEY" in result.stderr


def test_cli_refuses_a_credentials_directory_without_the_files(tmp_path: Path) -> None:
    result = _run_cli(
        "--port",
        str(_free_port()),
        env=_cli_env(CREDENTIALS_DIRECTORY=str(tmp_path), BINANCE_API_KEY="k", BINANCE_API_SECRET="s"),
    )
    assert result.returncode == 2
    assert str(tmp_path / "BINANCE_API_KEY") in result.stderr


def test_cli_refuses_a_non_loopback_host() -> None:
    result = _run_cli(
        "--host",
        "0.0.0.0",  # noqa: S104 - the case under test
        "--port",
        str(_free_port()),
        env=_cli_env(BINANCE_API_KEY="k", BINANCE_API_SECRET="s"),
    )
    assert result.returncode == 2
    assert "--allow-non-loopback" in result.stderr


async def test_cli_serves_with_credentials_from_systemd_files(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    (tmp_path / "BINANCE_API_KEY").write_text("file-key\n")
    (tmp_path / "BINANCE_API_SECRET").write_text("file-secret\n")
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantum_apply_layer.emulator",
        "--port",
        str(port),
        "--position",
        "BTCUSDT=0.25",
        env=_cli_env(CREDENTIALS_DIRECTORY=str(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        info = await _wait_for_info(http, base, process)
        assert info["emulator"] == "quantum-exchange-emulator"
        status, rows = await signed(
            http,
            "GET",
            f"{base}/fapi/v3/positionRisk",
            {},
            key="file-key",
            secret="file-secret",
        )
        assert (status, [(r["symbol"], r["positionAmt"]) for r in rows]) == (200, [("BTCUSDT", "0.250")])
    finally:
        process.terminate()
        output, _ = await process.communicate()
    assert f"listening on http://127.0.0.1:{port}" in output.decode()


async def _wait_for_info(http: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process) -> Any:
    for _ in range(200):
        if process.returncode is not None:
            pytest.fail(f"the emulator exited with {process.returncode}")
        try:
            async with http.get(f"{base}/_emulator/info") as response:
                return await response.json()
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)
    pytest.fail("the emulator never answered")


async def test_a_list_of_every_symbol_is_counted_apart_from_a_lookup_of_one(
    emulator: ExchangeEmulator, http: aiohttp.ClientSession
) -> None:
    """The benchmark tells the reconciliation from a plan's lookup by this name."""
    await signed(http, "GET", f"{emulator.base_url}/fapi/v3/positionRisk", {})
    await signed(http, "GET", f"{emulator.base_url}/fapi/v3/positionRisk", {"symbol": "BTCUSDT"})
    async with http.get(f"{emulator.base_url}/_emulator/requests") as response:
        counts = await response.json()
    assert counts == {"GET /fapi/v3/positionRisk (every symbol)": 1, "GET /fapi/v3/positionRisk": 1}
