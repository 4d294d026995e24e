"""The emulator's websocket API (`order.place` on /ws-fapi/v1): Binance's official SDK is the judge of its
answers, and it refuses and counts as POST /fapi/v1/order does."""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from binance_common.configuration import ConfigurationWebSocketAPI
from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
    DerivativesTradingUsdsFutures,
)
from binance_sdk_derivatives_trading_usds_futures.websocket_api.models import (
    NewOrderNewOrderRespTypeEnum,
    NewOrderReduceOnlyEnum,
    NewOrderSideEnum,
    NewOrderTypeEnum,
)
from binance_signing import close_params, ws_api_request
from emulator_fixture import EMULATOR_API_KEY, EMULATOR_API_SECRET

from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_state import Faults
from quantum_apply_layer.exchange import Exchange
from quantum_apply_layer.websocket_hosts import WS_API_PATH as PATH


def ws_url(emulator: ExchangeEmulator) -> str:
    return emulator.base_url.replace("http://", "ws://") + PATH


@pytest.fixture
async def ws_api(emulator: ExchangeEmulator) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(emulator)) as socket:
        yield socket


async def ask(socket: aiohttp.ClientWebSocketResponse, request: dict[str, object]) -> dict[str, Any]:
    await socket.send_str(json.dumps(request))
    answer = json.loads(await socket.receive_str(timeout=5))
    assert isinstance(answer, dict)
    return answer


async def test_the_official_sdk_places_a_close_over_the_websocket_api(
    emulator: ExchangeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    config = ConfigurationWebSocketAPI(
        api_key=EMULATOR_API_KEY, api_secret=EMULATOR_API_SECRET, stream_url=ws_url(emulator)
    )
    caplog.set_level(logging.WARNING)
    api = DerivativesTradingUsdsFutures(config_ws_api=config).websocket_api
    connection = await api.create_connection()  # type: ignore[no-untyped-call]  # the SDK has no hints here
    try:
        response = await connection.new_order(
            symbol="BTCUSDT",
            side=NewOrderSideEnum.SELL,
            type=NewOrderTypeEnum.MARKET,
            quantity=0.2,
            reduce_only=NewOrderReduceOnlyEnum.TRUE,
            new_client_order_id="qh-ws-sdk-0",
            new_order_resp_type=NewOrderNewOrderRespTypeEnum.RESULT,
        )
        answer = response.data()
    finally:
        await connection.close_connection(close_session=True)
    assert answer.status == 200
    assert answer.result is not None
    assert (answer.result.status, answer.result.client_order_id) == ("FILLED", "qh-ws-sdk-0")
    assert answer.result.executed_qty == "0.200"
    assert float(emulator.position_amount("BTCUSDT")) == pytest.approx(0.3)
    counts = {(limit.rateLimitType, limit.intervalNum): limit.count for limit in response.rate_limits}
    assert counts[("ORDERS", 10)] == 1
    lenient = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.WARNING]
    assert lenient == []


@pytest.mark.parametrize(
    ("request_of", "code"),
    [
        (lambda: ws_api_request("1", close_params("qh-ws-bad-0"), secret="not-the-secret"), -1022),
        (lambda: {**ws_api_request("1", close_params("qh-ws-bad-1")), "method": "order.cancel"}, -1020),
        (lambda: ws_api_request("1", {**close_params("qh-ws-bad-2"), "type": "STOP_MARKET"}), -4120),
    ],
    ids=["bad signature", "another method", "a conditional type"],
)
async def test_refusals_are_those_of_the_rest_endpoint_and_take_no_order(
    emulator: ExchangeEmulator,
    ws_api: aiohttp.ClientWebSocketResponse,
    request_of: Any,
    code: int,
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    answer = await ask(ws_api, request_of())
    assert (answer["id"], answer["status"], answer["error"]["code"]) == ("1", 400, code)
    assert all(order.status == "REJECTED" for order in emulator.orders())  # logged as REST logs them
    assert float(emulator.position_amount("BTCUSDT")) == pytest.approx(0.5)


async def test_both_doors_share_the_order_counters(
    emulator: ExchangeEmulator, exchange: Exchange, ws_api: aiohttp.ClientWebSocketResponse
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(orders_per_10s=1, window_scale=60))
    await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-door-rest-0")
    answer = await ask(ws_api, ws_api_request("2", close_params("qh-door-ws-0", "0.1")))
    assert (answer["status"], answer["error"]["code"]) == (429, -1015)
    assert [limit["count"] for limit in answer["rateLimits"] if limit["intervalNum"] == 10] == [2]


async def test_a_dropped_order_closes_the_connection_unanswered(
    emulator: ExchangeEmulator, ws_api: aiohttp.ClientWebSocketResponse
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(drop_next=1))
    await ws_api.send_str(json.dumps(ws_api_request("3", close_params("qh-ws-drop-0", "0.1"))))
    message = await ws_api.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert [order.status for order in emulator.orders()] == ["DROPPED"]
    assert float(emulator.position_amount("BTCUSDT")) == pytest.approx(0.5)
