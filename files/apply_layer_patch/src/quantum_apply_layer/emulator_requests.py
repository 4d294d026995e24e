"""The emulator's count of Binance requests by endpoint, for the benchmark's requests and weight per plan.

  GET /_emulator/requests   {"GET /fapi/v3/positionRisk": 12, "POST /fapi/v1/order": 5000, ...}
Websocket API calls are counted by method, as "WS order.place".
A list asked for every symbol at once (no `symbol`) is counted apart, as "GET /fapi/v3/positionRisk
(every symbol)": that is a reconciliation, not a plan's lookup. Reset with the rest of the state
(POST /_emulator/reset).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from quantum_apply_layer.emulator_state import AccountChange, ExchangeState

_BINANCE_PREFIXES = ("/fapi/", "/ws/", "/ws-fapi/")
_LISTS_EVERY_SYMBOL = frozenset({"/fapi/v2/positionRisk", "/fapi/v3/positionRisk", "/fapi/v1/openAlgoOrders"})
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestCounter:
    def __init__(self, state: ExchangeState) -> None:
        self._counts: Counter[str] = Counter()
        state.add_listener(self._on_change)

    def _on_change(self, change: AccountChange | None) -> None:
        if change is None:  # a reset; the state's lock is held, the counter is only touched by the server
            self._counts = Counter()

    def count(self, name: str) -> None:
        """A request that is no HTTP request: a websocket API call, as "WS order.place"."""
        self._counts[name] += 1

    def register(self, app: web.Application) -> None:
        @web.middleware
        async def count(request: web.Request, handler: _Handler) -> web.StreamResponse:
            if request.path.startswith(_BINANCE_PREFIXES):
                route = request.match_info.route.resource
                name = route.canonical if route is not None else request.path
                if name in _LISTS_EVERY_SYMBOL and "symbol" not in request.rel_url.query:
                    name += " (every symbol)"
                self._counts[f"{request.method} {name}"] += 1
            return await handler(request)

        async def counts(_: web.Request) -> web.StreamResponse:
            return web.json_response(dict(self._counts))

        app.middlewares.append(count)
        app.add_routes([web.get("/_emulator/requests", counts)])
