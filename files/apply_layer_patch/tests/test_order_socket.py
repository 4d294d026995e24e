"""Closes by the websocket API (`order_socket.py`): the door, its answers judged as REST's are, and REST
whenever its connection is not open. Against the emulator's `/ws-fapi/v1`, which Binance's own SDK
checks in test_emulator_ws_api.py."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from emulator_fixture import emulator_exchange
from test_exchange import sample
from test_position_stream import requests, until

from quantum_apply_layer import metrics
from quantum_apply_layer import order_socket as order_socket_module
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.emulator_state import Faults
from quantum_apply_layer.exchange import Exchange, ExchangeError
from quantum_apply_layer.order_socket import OrderSocket
from quantum_apply_layer.order_writes import WriteStamp, watching_writes
from quantum_apply_layer.websocket_hosts import WS_API_PATH, order_socket_url

WS_ORDER = "WS order.place"
REST_ORDER = "POST /fapi/v1/order"
CONNECT = "GET /ws-fapi/v1"


@pytest.fixture
async def quick(emulator: ExchangeEmulator) -> AsyncIterator[Exchange]:
    """An adapter with the websocket door that gives up on an answer after 0.3 s."""
    adapter = emulator_exchange(emulator, timeout_s=0.3)
    await adapter.open()
    yield adapter
    await adapter.close()


def test_the_door_of_binance_and_of_the_emulator() -> None:
    assert order_socket_url("https://fapi.binance.com") == "wss://ws-fapi.binance.com/ws-fapi/v1"
    assert order_socket_url("https://testnet.binancefuture.com") == (
        "wss://testnet.binancefuture.com/ws-fapi/v1"
    )
    assert order_socket_url("http://127.0.0.1:8090") == "ws://127.0.0.1:8090/ws-fapi/v1"


def test_a_pem_key_sends_by_rest_the_door_signs_with_hmac_only() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----"
    url = "http://127.0.0.1:1"
    assert Exchange(url, "key", pem, 1.0, order_socket_url=order_socket_url(url))._orders is None
    assert math.isnan(sample("apply_exchange_order_socket_up"))  # no door, so no ApplyLayerOrderSocketDown
    assert Exchange(url, "key", "hmac", 1.0, order_socket_url=order_socket_url(url))._orders is not None


async def test_a_close_goes_by_the_websocket_api_stamped_at_its_write_its_counts_kept(
    emulator: ExchangeEmulator, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    assert sample("apply_exchange_order_socket_up") == 1
    metrics.apply_exchange_order_count.labels("10s").set(0)
    before = await requests(emulator)
    writes_called: list[float] = []
    send_str = aiohttp.ClientWebSocketResponse.send_str

    async def send_str_timed(socket: aiohttp.ClientWebSocketResponse, data: str) -> None:
        writes_called.append(time.perf_counter())
        await send_str(socket, data)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "send_str", send_str_timed)
    with watching_writes(WriteStamp()) as stamp:
        ack = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.2, "qh-ws-0")
    assert (ack.status, ack.filled_qty) == ("FILLED", 0.2)
    assert await requests(emulator) - before == Counter({WS_ORDER: 1})
    # Stamped as the write is called, not when it returns (which counts the process it woke).
    assert stamp.first_at is not None
    assert stamp.first_at <= writes_called[0]
    # The answer's rateLimits stand for the X-MBX-* headers: the order counts come from it.
    assert sample("apply_exchange_order_count", interval="10s") == 1
    assert [order.client_order_id for order in emulator.orders()] == ["qh-ws-0"]


async def test_a_refusal_on_the_websocket_is_named_as_by_rest(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.0})  # nothing to reduce: Binance refuses a reduce-only order
    with pytest.raises(ExchangeError) as refused:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.2, "qh-ws-refused")
    assert (refused.value.kind, refused.value.code) == ("rejected", -2022)
    assert not refused.value.outcome_unknown


async def test_a_429_on_the_websocket_keeps_everything_home_until_its_retry_after(
    emulator: ExchangeEmulator, exchange: Exchange
) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(orders_per_10s=1))
    await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-limit-0")
    throttled = sample("apply_exchange_throttled_total", status="429")
    with pytest.raises(ExchangeError) as over:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-limit-1")
    assert (over.value.kind, over.value.code) == ("rate_limit", -1015)
    assert sample("apply_exchange_throttled_total", status="429") == throttled + 1
    before = await requests(emulator)
    with pytest.raises(ExchangeError, match="Retry-After"):  # the answer's retryAfter, kept: no ban earned
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-limit-2")
    assert await requests(emulator) - before == Counter()


async def test_a_connection_lost_with_the_order_in_flight_is_an_unknown_outcome_then_rest_carries_orders(
    emulator: ExchangeEmulator, exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(order_socket_module, "MIN_BACKOFF_S", 1.0)  # closed long enough to send by REST
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(drop_next=1))  # the emulator closes the connection, unanswered
    with pytest.raises(ExchangeError) as lost:
        await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-drop-0")
    assert lost.value.outcome_unknown  # the caller looks it up before it sends again
    await until(lambda: sample("apply_exchange_order_socket_up") == 0, timeout_s=5)
    before = await requests(emulator)
    ack = await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-drop-1")
    assert ack.status == "FILLED"
    assert await requests(emulator) - before == Counter({REST_ORDER: 1})  # not open: REST, never both
    await until(lambda: sample("apply_exchange_order_socket_up") == 1, timeout_s=5)
    before = await requests(emulator)
    await exchange.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-drop-2")
    assert await requests(emulator) - before == Counter({WS_ORDER: 1})  # open again: the websocket


async def test_no_answer_in_time_is_an_unknown_outcome(emulator: ExchangeEmulator, quick: Exchange) -> None:
    emulator.set_positions({"BTCUSDT": 0.5})
    emulator.set_faults(Faults(latency_ms=600))  # the order is taken, its answer comes after 0.3 s
    with pytest.raises(ExchangeError) as late:
        await quick.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-late-0")
    assert late.value.kind == "timeout"
    assert late.value.outcome_unknown
    found = await quick.find_order("BTCUSDT", "qh-ws-late-0")
    assert found is not None
    assert found.status == "FILLED"


async def test_a_connection_is_replaced_before_binance_closes_it_at_24_hours(
    emulator: ExchangeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(order_socket_module, "MAX_AGE_S", 0.5)
    emulator.set_positions({"BTCUSDT": 0.5})
    before = await requests(emulator)
    adapter = emulator_exchange(emulator)
    try:
        await adapter.open()
        connects = 0
        for _ in range(40):  # each connection retires after 0.5 s and the next one is opened
            await asyncio.sleep(0.1)
            connects = (await requests(emulator) - before)[CONNECT]
            if connects >= 3:
                break
        assert connects >= 3
        ack = await adapter.send_reduce_only_market("BTCUSDT", "SELL", 0.1, "qh-ws-aged-0")
    finally:
        await adapter.close()
    assert ack.status == "FILLED"


@contextlib.asynccontextmanager
async def websocket_api(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A server whose /ws-fapi/v1 is `handler`; yields the websocket API's URL."""
    app = web.Application()
    app.add_routes([web.get(WS_API_PATH, handler)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}{WS_API_PATH}"
    finally:
        await runner.cleanup()


def order_socket(url: str, refusals: list[tuple[int, float]]) -> OrderSocket:
    async def nothing_to_pass() -> None:
        return None

    async def refused(status: int, retry_after_s: float) -> None:
        refusals.append((status, retry_after_s))

    return OrderSocket(url, "key", "secret", lambda: 0, nothing_to_pass, refused)


async def test_a_429_at_the_handshake_is_a_refusal_with_its_retry_after() -> None:
    async def over_the_limit(_: web.Request) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "30"})

    refusals: list[tuple[int, float]] = []
    async with websocket_api(over_the_limit) as url:
        task = asyncio.create_task(order_socket(url, refusals).run())
        try:
            async with asyncio.timeout(5):
                while not refusals:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert refusals[0] == (429, 30.0)  # the adapter then blocks every process (Exchange._throttled)


async def test_a_server_that_accepts_and_drops_at_once_is_not_hammered() -> None:
    accepted = 0

    async def accept_and_drop(request: web.Request) -> web.StreamResponse:
        nonlocal accepted
        accepted += 1
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.close()
        return socket

    async with websocket_api(accept_and_drop) as url:
        task = asyncio.create_task(order_socket(url, []).run())
        await asyncio.sleep(1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Backing off 0.1, 0.2, 0.4 s: four connections at most in a second, not one every 0.1 s (weight 5 each).
    assert 1 <= accepted <= 4


async def test_garbage_from_the_server_is_no_answer_the_close_times_out_as_an_unknown_outcome() -> None:
    async def garbage(request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for _ in socket:  # every request answered with what a broken proxy might send
            await socket.send_bytes(b"\xff\xfe\x00")
            await socket.send_str("not json")
            await socket.send_str('["a list"]')
            await socket.send_str('{"id": "no such request", "status": 200, "result": {}}')
        return socket

    async with websocket_api(garbage) as url:
        door = order_socket(url, [])
        task = asyncio.create_task(door.run())
        try:
            assert await door.wait_connected(5)
            with pytest.raises(TimeoutError):  # the adapter names it a timeout: looked up before any resend
                await door.place({"symbol": "BTCUSDT"}, timeout_s=0.3)
            assert door.connected  # nothing it sent broke the connection or the reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_closing_the_adapter_can_itself_be_cancelled(emulator: ExchangeEmulator) -> None:
    adapter = emulator_exchange(emulator, timeout_s=1.0)
    await adapter.open()
    closing = asyncio.create_task(adapter.close())
    await asyncio.sleep(0)  # close() now waits for the door's connection to close
    closing.cancel()
    await asyncio.wait({closing})
    assert closing.cancelled()  # a stop that gives up on the close is not swallowed
    assert adapter._client.session is None  # and ccxt's session is closed all the same
