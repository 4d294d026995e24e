"""The emulator's user data stream, as Binance USD-M serves it: a listen key, then a websocket of events.

Binance endpoints (API key in X-MBX-APIKEY, no signature, as Binance's USER_STREAM security):
  POST   /fapi/v1/listenKey   {"listenKey": ...}; the same key while it is valid, its 60 minutes renewed
  PUT    /fapi/v1/listenKey   keeps it 60 minutes more; -1125 when it has expired or never existed
  DELETE /fapi/v1/listenKey   closes it, and its connections
  GET    /ws/<listenKey>      the websocket: ACCOUNT_UPDATE and ORDER_TRADE_UPDATE for this account's
                              positions and orders, `listenKeyExpired` when the key runs out
Every order the emulator takes pushes an ORDER_TRADE_UPDATE; every position change (an order's fill,
or a position set through /_emulator/positions: a liquidation, a manual close) an ACCOUNT_UPDATE.

Faults (not Binance, loopback control endpoints like the others):
  GET|POST /_emulator/user_stream       {"mode": "live" | "stale" | "down"}
    stale: connections stay open but no event is delivered any more (lost, not queued);
    down:  every connection is closed and new ones are refused until the mode is live again.
  POST /_emulator/user_stream/push      {"BTCUSDT": 2.0}: an ACCOUNT_UPDATE saying so, the book unchanged
                                        (a stream that lies)
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, web

from quantum_apply_layer.emulator_auth import check_api_key
from quantum_apply_layer.emulator_state import AccountChange, BinanceError, ExchangeState, now_ms

LISTEN_KEY_VALIDITY_S = 3600.0
MODES = ("live", "stale", "down")
_NO_KEY = BinanceError(400, -1125, "This listenKey does not exist.")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(
        body, status=status, dumps=lambda value: json.dumps(value, separators=(",", ":"))
    )


def _account_update(symbol: str, amount: str, entry_price: str, reason: str) -> dict[str, Any]:
    stamp = now_ms()
    position = {"s": symbol, "pa": amount, "ep": entry_price, "bep": entry_price, "cr": "0", "up": "0"}
    position.update({"mt": "cross", "iw": "0", "ps": "BOTH"})
    return {"e": "ACCOUNT_UPDATE", "E": stamp, "T": stamp, "a": {"m": reason, "B": [], "P": [position]}}


def _order_trade_update(order: dict[str, Any]) -> dict[str, Any]:
    stamp = int(order.get("updateTime") or now_ms())
    filled = order.get("executedQty", "0")
    body = {
        "s": order["symbol"],
        "c": order["clientOrderId"],
        "S": order["side"],
        "o": order["type"],
        "f": order["timeInForce"],
        "q": order["origQty"],
        "p": order["price"],
        "ap": order["avgPrice"],
        "sp": order["stopPrice"],
        "x": "TRADE" if order["status"] == "FILLED" else "NEW",
        "X": order["status"],
        "i": order["orderId"],
        "l": filled,
        "z": filled,
        "L": order["avgPrice"],
        "T": stamp,
        "R": order["reduceOnly"],
        "ot": order["origType"],
        "ps": "BOTH",
        "cp": order["closePosition"],
    }
    return {"e": "ORDER_TRADE_UPDATE", "E": stamp, "T": stamp, "o": body}


class UserStreamServer:
    """Listen keys and websocket connections of the emulator's one account."""

    def __init__(self, state: ExchangeState, api_key: str) -> None:
        self._api_key = api_key
        self._keys: dict[str, float] = {}  # listen key -> expiry (monotonic)
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._mode = "live"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: set[asyncio.Future[None]] = set()  # held, or the loop may collect them unsent
        state.add_listener(self._on_change)

    # --- the account's changes, pushed from whichever thread made them -----------------------------
    def _on_change(self, change: AccountChange | None) -> None:
        if self._loop is None:
            return
        if change is None:
            self._loop.call_soon_threadsafe(self._reset)
            return
        events = []
        if change.order is not None:
            events.append(_order_trade_update(change.order))
        if change.order is None or change.order["status"] == "FILLED":
            events.append(
                _account_update(
                    change.symbol,
                    str(change.amount),
                    str(change.entry_price),
                    "ORDER" if change.order else "ADJUSTMENT",
                )
            )
        self._loop.call_soon_threadsafe(self._broadcast, events)

    def _broadcast(self, events: list[dict[str, Any]]) -> None:
        if self._mode != "live":
            return
        for sockets in self._sockets.values():
            for socket in list(sockets):
                sending = asyncio.ensure_future(self._send(socket, *events))
                self._sending.add(sending)
                sending.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send(socket: web.WebSocketResponse, *events: dict[str, Any]) -> None:
        for event in events:
            if socket.closed:
                return
            try:
                await socket.send_str(json.dumps(event, separators=(",", ":")))
            except ConnectionError:
                return  # the client went away: its handler cleans up

    def _reset(self) -> None:
        self._mode = "live"

    # --- Binance endpoints ----------------------------------------------------------------------------
    def _valid_key(self) -> str | None:
        now = time.monotonic()
        return next((key for key, expiry in self._keys.items() if expiry > now), None)

    def _guarded(
        self, answer: Callable[[], Awaitable[dict[str, str]]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                check_api_key(request.headers.get("X-MBX-APIKEY"), self._api_key)
                return _json(await answer())
            except BinanceError as error:
                return _json({"code": error.code, "msg": error.msg}, status=error.http_status)

        return handle

    async def _create(self) -> dict[str, str]:
        key = self._valid_key() or secrets.token_urlsafe(48)
        self._keys[key] = time.monotonic() + LISTEN_KEY_VALIDITY_S
        return {"listenKey": key}

    async def _keep_alive(self) -> dict[str, str]:
        key = self._valid_key()
        if key is None:
            raise _NO_KEY
        self._keys[key] = time.monotonic() + LISTEN_KEY_VALIDITY_S
        return {"listenKey": key}

    async def _delete(self) -> dict[str, str]:
        for key in list(self._keys):
            await self._close(key)
            del self._keys[key]
        return {}

    async def _close(self, key: str) -> None:
        for socket in list(self._sockets.get(key, ())):
            await socket.close(code=WSCloseCode.GOING_AWAY)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["listen_key"]
        if self._mode == "down":
            return web.Response(status=503, text="user data stream down (emulator fault)")
        if self._keys.get(key, 0.0) <= time.monotonic():
            return web.Response(status=400, text="invalid listen key")
        socket = web.WebSocketResponse(heartbeat=10.0)
        await socket.prepare(request)
        self._sockets.setdefault(key, set()).add(socket)
        try:
            async for _message in socket:
                pass  # Binance ignores what a client sends on the user data stream
        finally:
            self._sockets[key].discard(socket)
        return socket

    async def _expire_keys(self) -> None:
        """A key not kept alive runs out: Binance says `listenKeyExpired`, then stops pushing."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, expiry in list(self._keys.items()):
                if expiry <= now:
                    event = {"e": "listenKeyExpired", "E": now_ms(), "listenKey": key}
                    for socket in list(self._sockets.get(key, ())):
                        await self._send(socket, event)
                    await self._close(key)
                    del self._keys[key]

    # --- faults -----------------------------------------------------------------------------------------
    async def _get_mode(self, _: web.Request) -> web.StreamResponse:
        return _json({"mode": self._mode})

    async def _set_mode(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        mode = body.get("mode")
        if set(body) != {"mode"} or mode not in MODES:
            raise web.HTTPBadRequest(text=f'expected {{"mode": one of {list(MODES)}}}')
        self._mode = str(mode)
        if mode == "down":
            for key in list(self._sockets):
                await self._close(key)
        return _json({"mode": self._mode})

    async def _push(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        events = []
        for symbol, amount in body.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise web.HTTPBadRequest(text=f"{symbol}: expected a number")
            events.append(_account_update(str(symbol), str(amount), "0", "ORDER"))
        self._broadcast(events)
        return _json({"pushed": len(events)})

    def register(self, app: web.Application) -> None:
        async def started(_: web.Application) -> None:
            self._loop = asyncio.get_running_loop()
            expiring = asyncio.create_task(self._expire_keys())
            app[_EXPIRY_TASK] = expiring

        async def stopping(_: web.Application) -> None:
            app[_EXPIRY_TASK].cancel()
            for key in list(self._sockets):
                await self._close(key)

        app.on_startup.append(started)
        app.on_shutdown.append(stopping)
        app.add_routes(
            [
                web.post("/fapi/v1/listenKey", self._guarded(self._create)),
                web.put("/fapi/v1/listenKey", self._guarded(self._keep_alive)),
                web.delete("/fapi/v1/listenKey", self._guarded(self._delete)),
                web.get("/ws/{listen_key}", self._websocket),
                web.get("/_emulator/user_stream", self._get_mode),
                web.post("/_emulator/user_stream", self._set_mode),
                web.post("/_emulator/user_stream/push", self._push),
            ]
        )


_EXPIRY_TASK = web.AppKey("user_stream_expiry", asyncio.Task[None])


async def json_object(request: web.Request) -> dict[str, Any]:
    """A control endpoint's body: a JSON object, else 400."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
