"""The emulator's websocket API for orders, as Binance USD-M serves it at wss://ws-fapi.binance.com/ws-fapi/v1.

  GET /ws-fapi/v1   a websocket (weight 5 to connect); each text frame one request
                    {"id": ..., "method": "order.place", "params": {..., "apiKey", "timestamp", "signature"}}
                    answered {"id", "status": 200, "result": <the order>, "rateLimits": [...]} or
                    {"id", "status": <HTTP status>, "error": {"code", "msg"}, "rateLimits": [...]}; a
                    429 or 418's error also has "data": {"serverTime", "retryAfter"} (ms)

`order.place` is POST /fapi/v1/order by another door: the same key, timestamp and signature checks
(the signature is over the params but `signature`, sorted by name, as `name=value` joined by `&`), the
same state (the order echoes on the user data stream), the same faults and the same rate counters
(weight 0, one order). Requests on one connection are answered in order. Other methods are refused
(-1020): the apply layer would use this one only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from quantum_apply_layer.emulator_auth import check_api_key, check_signature, check_timestamp
from quantum_apply_layer.emulator_limits import ENDPOINT_COSTS, Admission, LimitSettings
from quantum_apply_layer.emulator_orders import OrderAnswer, take_order
from quantum_apply_layer.emulator_requests import RequestCounter
from quantum_apply_layer.emulator_state import BinanceError, ExchangeState
from quantum_apply_layer.websocket_hosts import WS_API_PATH

_MALFORMED = BinanceError(
    400, -1102, "Mandatory parameter 'id', 'method' or 'params' was not sent or malformed."
)
_UNSUPPORTED = BinanceError(400, -1020, "This operation is not supported.")


def _text(value: object) -> str:
    """A JSON param as Binance reads it: strings as they are, booleans and numbers as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def _rate_limits(admission: Admission, settings: LimitSettings) -> list[dict[str, Any]]:
    """The counters of the REST headers, in the websocket API's `rateLimits` shape."""
    shapes = (
        ("X-MBX-USED-WEIGHT-1M", "REQUEST_WEIGHT", "MINUTE", 1, settings.weight_per_minute),
        ("X-MBX-ORDER-COUNT-10S", "ORDERS", "SECOND", 10, settings.orders_per_10s),
        ("X-MBX-ORDER-COUNT-1M", "ORDERS", "MINUTE", 1, settings.orders_per_minute),
    )
    return [
        {
            "rateLimitType": kind,
            "interval": interval,
            "intervalNum": number,
            "limit": limit,
            "count": int(count),
        }
        for header, kind, interval, number, limit in shapes
        if (count := admission.headers.get(header)) is not None
    ]


class WebSocketApi:
    def __init__(self, state: ExchangeState, api_key: str, api_secret: str, counter: RequestCounter) -> None:
        self._state = state
        self._api_key = api_key
        self._secret = api_secret.encode()
        self._counter = counter

    def _authenticated(self, params: Mapping[str, object]) -> dict[str, str]:
        """The order's params once key, timestamp and signature check out (without those three)."""
        texts = {str(name): _text(value) for name, value in params.items()}
        check_api_key(texts.get("apiKey"), self._api_key)
        check_timestamp(texts, self._state.server_time_ms())
        signature = texts.pop("signature", None)
        check_signature(self._secret, urlencode(sorted(texts.items())), signature)
        texts.pop("apiKey")
        return texts

    def _place(self, request: Mapping[str, Any], received: float) -> tuple[OrderAnswer, list[dict[str, Any]]]:
        method, params = request["method"], request["params"]
        self._counter.count(f"WS {method}")
        cost = ENDPOINT_COSTS.get(("WS", str(method)))
        if cost is None:
            return OrderAnswer(_UNSUPPORTED.http_status, _UNSUPPORTED.body()), []
        settings = self._state.limit_settings()
        now_ms = self._state.server_time_ms()
        admission = self._state.limits.admit(cost.weight, cost.orders, now_ms, settings)
        limits = _rate_limits(admission, settings)
        if admission.refusal is not None:
            refusal = admission.refusal
            error: dict[str, Any] = {"code": refusal.code, "msg": refusal.msg}
            if admission.retry_after_s is not None:  # Binance: when a request may be sent again, in ms
                error["data"] = {"serverTime": now_ms, "retryAfter": now_ms + admission.retry_after_s * 1000}
            return OrderAnswer(refusal.http_status, error), limits
        try:
            order_params = self._authenticated(params)
        except BinanceError as error:
            return OrderAnswer(error.http_status, error.body()), limits
        return take_order(self._state, self._state.new_order, order_params, received), limits

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=10.0)
        await socket.prepare(request)
        async for message in socket:
            if message.type is not WSMsgType.TEXT:
                continue
            received = time.monotonic()
            try:
                parsed = json.loads(message.data)
                if not isinstance(parsed, dict) or not isinstance(parsed.get("params"), dict):
                    raise ValueError("not a request")
                if not isinstance(parsed.get("method"), str):
                    raise ValueError("not a request")
            except ValueError:
                await socket.send_str(json.dumps({"id": None, "status": 400, "error": _MALFORMED.body()}))
                continue
            answer, limits = self._place(parsed, received)
            if answer.dropped:
                await socket.close()  # no answer: the client cannot know whether the order was taken
                break
            if answer.late_s:
                await asyncio.sleep(answer.late_s)
            reply: dict[str, Any] = {"id": parsed.get("id"), "status": answer.status}
            reply["result" if answer.ok else "error"] = answer.body
            reply["rateLimits"] = limits
            await socket.send_str(json.dumps(reply, separators=(",", ":")))
        return socket

    def register(self, app: web.Application) -> None:
        app.add_routes([web.get(WS_API_PATH, self._serve)])
