"""The emulator's user data stream, through ccxt (listen key) and a plain websocket, as a client meets it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from emulator_fixture import EMULATOR_API_KEY

from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.exchange import Exchange, ExchangeError
from quantum_apply_layer.websocket_hosts import user_stream_url


async def next_event(socket: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await socket.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    event: dict[str, Any] = json.loads(message.data)
    return event


async def test_a_listen_key_is_the_same_while_valid_and_refused_once_deleted(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    key = await exchange.open_listen_key()
    assert await exchange.open_listen_key() == key
    await exchange.keep_listen_key()
    async with aiohttp.ClientSession() as session:
        headers = {"X-MBX-APIKEY": EMULATOR_API_KEY}
        async with session.delete(f"{emulator.base_url}/fapi/v1/listenKey", headers=headers) as answer:
            assert answer.status == 200
        async with session.put(f"{emulator.base_url}/fapi/v1/listenKey") as unsigned:
            assert (await unsigned.json())["code"] == -2014  # no API key: refused as Binance does
    with pytest.raises(ExchangeError) as refused:
        await exchange.keep_listen_key()
    assert refused.value.code == -1125


async def test_the_stream_pushes_our_orders_and_every_position_change(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    key = await exchange.open_listen_key()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{user_stream_url(emulator.base_url)}/ws/{key}") as socket,
    ):
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.2, "qh-stream-0")
        order = await next_event(socket)
        assert order["e"] == "ORDER_TRADE_UPDATE"
        assert (order["o"]["c"], order["o"]["X"], order["o"]["s"]) == ("qh-stream-0", "FILLED", "BTCUSDT")
        account = await next_event(socket)
        assert account["e"] == "ACCOUNT_UPDATE"
        assert account["T"] >= order["T"]
        (position,) = account["a"]["P"]
        assert (position["s"], float(position["pa"]), position["ps"]) == ("BTCUSDT", 0.3, "BOTH")
        emulator.set_positions({"BTCUSDT": 0})  # a liquidation
        liquidated = await next_event(socket)
        assert float(liquidated["a"]["P"][0]["pa"]) == 0.0


async def test_a_stream_down_closes_connections_and_refuses_new_ones(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    key = await exchange.open_listen_key()
    url = f"{user_stream_url(emulator.base_url)}/ws/{key}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as socket:
            async with session.post(
                f"{emulator.base_url}/_emulator/user_stream", json={"mode": "down"}
            ) as answer:
                assert answer.status == 200
            closing = await socket.receive(timeout=5)
            assert closing.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


def test_the_stream_host_follows_the_exchange() -> None:
    assert user_stream_url("https://fapi.binance.com") == "wss://fstream.binance.com"
    assert user_stream_url("https://testnet.binancefuture.com") == "wss://fstream.binancefuture.com"
    assert user_stream_url("http://127.0.0.1:8090") == "ws://127.0.0.1:8090"
