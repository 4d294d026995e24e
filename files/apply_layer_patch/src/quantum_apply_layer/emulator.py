"""quantum-exchange-emulator: the Binance USD-M Futures REST subset the apply layer uses, on loopback.

It answers as Binance does (same paths, signing, error codes, HTTP statuses, rate limits and their
headers), so ccxt's `binanceusdm` and Binance's own SDK run against it unchanged with their base URL
pointed here. Tests, the benchmark and the lab use it; it never talks to a real exchange.

Binance endpoints: GET /fapi/v1/ping, /fapi/v1/time, /fapi/v1/exchangeInfo; signed GET
/fapi/v1/leverageBracket, /fapi/v2/positionRisk, /fapi/v3/positionRisk, /fapi/v1/positionSide/dual,
/fapi/v1/order, /fapi/v1/algoOrder, /fapi/v1/openAlgoOrders; signed POST /fapi/v1/order (MARKET only;
conditional types get -4120), /fapi/v1/algoOrder (CONDITIONAL STOP_MARKET / TAKE_PROFIT_MARKET, which
stay open: stops never trigger here); signed DELETE /fapi/v1/algoOrder. Weights and order counts are
those of `emulator_limits.ENDPOINT_COSTS`.

The websocket API's `order.place` (emulator_ws_api.py) takes orders at /ws-fapi/v1 as POST
/fapi/v1/order does.

Control endpoints (not Binance, unauthenticated, hence loopback only by default):
  GET  /_emulator/info                  {"emulator": "quantum-exchange-emulator", "version": ...}
  GET  /_emulator/orders                every order POST received (plain and algo), in arrival order
  GET  /_emulator/positions             {"BTCUSDT": 0.5, ...} signed amounts
  POST /_emulator/positions             {"BTCUSDT": 0.5, ...} set the named symbols' amounts
  POST /_emulator/marks                 {"BTCUSDT": 65000, ...} set mark prices (fills and stops use them)
  POST /_emulator/reset                 flat positions, default marks, no orders, no faults, no limits used
  GET|POST /_emulator/faults            faults and settings, every field of `emulator_state.Faults`:
    fail_next, fail_code, fail_http_status, fail_msg: the next N order POSTs are refused with that code
                and status, and not applied;
    latency_ms: every order POST is applied, then answered M ms late (a client timeout then leaves an
                order the client never heard of, the case a lookup must settle);
    drop_next: the next K order POSTs are not applied and their connection is closed without an answer;
    fill_ratio: the share of a MARKET order that fills (below 1: EXPIRED with part executed);
    price_protect_next: the next N MARKET orders are refused with -4131;
    clock_offset_ms: the exchange's clock runs this far ahead of the host's (negative: behind);
    hedge_mode: dual-side positions (LONG/SHORT rows; reduceOnly refused with -1106);
    weight_per_minute, orders_per_10s, orders_per_minute, ban_seconds: Binance's limits (2400, 300,
                1200) and the ban a client earns by going on after a 429; window_scale stretches the
                windows (tests) without changing the header names.
    A POST replaces the whole set: fields left out go back to their defaults ({} clears every fault).
"""

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.typedefs import Middleware

from quantum_apply_layer import __version__
from quantum_apply_layer.config import ConfigError, is_loopback_host, load_credentials
from quantum_apply_layer.emulator_auth import check_api_key, check_signature, check_timestamp
from quantum_apply_layer.emulator_limits import ENDPOINT_COSTS
from quantum_apply_layer.emulator_markets import MARKETS, exchange_info, leverage_brackets
from quantum_apply_layer.emulator_orders import Placer, take_order
from quantum_apply_layer.emulator_requests import RequestCounter
from quantum_apply_layer.emulator_state import BinanceError, ExchangeState, Faults, OrderLogEntry
from quantum_apply_layer.emulator_user_stream import UserStreamServer, json_object
from quantum_apply_layer.emulator_ws_api import WebSocketApi

EMULATOR_NAME = "quantum-exchange-emulator"

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def _binance_error(error: BinanceError) -> web.Response:
    return _json(error.body(), status=error.http_status)


def _split_signature(raw: str) -> tuple[str, str | None]:
    """(the raw text without its `signature=` item, the signature)."""
    if "signature=" not in raw:
        return raw, None
    kept: list[str] = []
    signature = None
    for item in raw.split("&"):
        if item.startswith("signature="):
            signature = item[len("signature=") :]
        else:
            kept.append(item)
    return "&".join(kept), signature


def _form_fields(raw: str) -> dict[str, str]:
    """Form-decode `a=1&b=x%3Ay`; most values need no unquoting, and skipping it is the cheap path."""
    fields: dict[str, str] = {}
    for item in raw.split("&") if raw else ():
        name, _, value = item.partition("=")
        fields[unquote_plus(name)] = unquote_plus(value) if "%" in value or "+" in value else value
    return fields


class _BinanceApi:
    """The request handlers: authentication as Binance does it, then one call into the state."""

    def __init__(self, state: ExchangeState, api_key: str, api_secret: str) -> None:
        self._state = state
        self._api_key = api_key
        self._secret = api_secret.encode()

    async def _params(self, request: web.Request) -> dict[str, str]:
        """The request's parameters (query string then form body) once its key and signature check out."""
        raw_query = request.rel_url.raw_query_string
        raw_body = await request.text() if request.body_exists else ""
        query, query_signature = _split_signature(raw_query)
        body, body_signature = _split_signature(raw_body)
        params = _form_fields(query)
        params.update(_form_fields(body))
        check_api_key(request.headers.get("X-MBX-APIKEY"), self._api_key)
        check_timestamp(params, self._state.server_time_ms())
        # Binance signs the query string and the body concatenated, without a separator.
        check_signature(self._secret, query + body, query_signature or body_signature)
        return params

    def signed(self, answer: Callable[[Mapping[str, str]], Any]) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return _json(answer(await self._params(request)))
            except BinanceError as error:
                return _binance_error(error)

        return handle

    def order_post(self, place: Placer) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            received = time.monotonic()
            try:
                params = await self._params(request)
            except BinanceError as error:
                return _binance_error(error)
            answer = take_order(self._state, place, params, received)
            if answer.dropped:
                if request.transport is not None:
                    request.transport.abort()
                # The client has lost its connection; this response is never written.
                return web.Response(status=503)
            if answer.late_s:
                await asyncio.sleep(answer.late_s)
            return _json(answer.body, status=answer.status)

        return handle


def _limits_middleware(state: ExchangeState) -> Middleware:
    """Count every Binance call against the limits before anything else, as Binance does per IP."""

    @web.middleware
    async def limits(request: web.Request, handler: _Handler) -> web.StreamResponse:
        cost = ENDPOINT_COSTS.get((request.method, request.path))
        if cost is None:
            return await handler(request)
        weight = cost.weight
        if cost.weight_without_symbol is not None and "symbol" not in request.rel_url.query:
            weight = cost.weight_without_symbol
        admission = state.limits.admit(weight, cost.orders, state.server_time_ms(), state.limit_settings())
        response: web.StreamResponse
        if admission.refusal is not None:
            refusal = admission.refusal
            response = _json({"code": refusal.code, "msg": refusal.msg}, status=refusal.http_status)
        else:
            response = await handler(request)
        response.headers.update(admission.headers)
        return response

    return limits


def _control_routes(state: ExchangeState) -> list[web.RouteDef]:
    async def info(_: web.Request) -> web.StreamResponse:
        return _json({"emulator": EMULATOR_NAME, "version": __version__, "symbols": sorted(MARKETS)})

    async def orders(_: web.Request) -> web.StreamResponse:
        return _json({"orders": [entry.to_json() for entry in state.order_log()]})

    async def get_positions(_: web.Request) -> web.StreamResponse:
        return _json({symbol: float(state.position_amount(symbol)) for symbol in MARKETS})

    async def set_positions(request: web.Request) -> web.StreamResponse:
        try:
            state.set_positions(await json_object(request))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        return await get_positions(request)

    async def set_marks(request: web.Request) -> web.StreamResponse:
        try:
            state.set_mark_prices(await json_object(request))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        return _json({"ok": True})

    async def reset(_: web.Request) -> web.StreamResponse:
        state.reset()
        log.info("state reset")
        return _json({"ok": True})

    async def get_faults(_: web.Request) -> web.StreamResponse:
        return _json(asdict(state.faults()))

    async def set_faults(request: web.Request) -> web.StreamResponse:
        try:
            faults = Faults.from_json(await json_object(request))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        state.set_faults(faults)
        log.info("faults set: %s", faults)
        return _json(asdict(faults))

    return [
        web.get("/_emulator/info", info),
        web.get("/_emulator/orders", orders),
        web.get("/_emulator/positions", get_positions),
        web.post("/_emulator/positions", set_positions),
        web.post("/_emulator/marks", set_marks),
        web.post("/_emulator/reset", reset),
        web.get("/_emulator/faults", get_faults),
        web.post("/_emulator/faults", set_faults),
    ]


def build_app(state: ExchangeState, api_key: str, api_secret: str) -> web.Application:
    api = _BinanceApi(state, api_key, api_secret)

    async def ping(_: web.Request) -> web.StreamResponse:
        return _json({})

    async def server_time(_: web.Request) -> web.StreamResponse:
        return _json({"serverTime": state.server_time_ms()})

    async def info(_: web.Request) -> web.StreamResponse:
        limits = state.limit_settings()
        return _json(
            exchange_info(
                state.server_time_ms(),
                limits.weight_per_minute,
                limits.orders_per_minute,
                limits.orders_per_10s,
            )
        )

    def brackets(params: Mapping[str, str]) -> Any:
        symbol = params.get("symbol")
        if not symbol:
            return [leverage_brackets(spec) for spec in MARKETS.values()]
        if symbol not in MARKETS:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return leverage_brackets(MARKETS[symbol])

    app = web.Application(middlewares=[_limits_middleware(state)])
    counter = RequestCounter(state)
    counter.register(app)
    WebSocketApi(state, api_key, api_secret, counter).register(app)
    UserStreamServer(state, api_key).register(app)
    app.add_routes(
        [
            web.get("/fapi/v1/ping", ping),
            web.get("/fapi/v1/time", server_time),
            web.get("/fapi/v1/exchangeInfo", info),
            web.get("/fapi/v1/leverageBracket", api.signed(brackets)),
            web.get("/fapi/v2/positionRisk", api.signed(state.positions_v2)),
            web.get("/fapi/v3/positionRisk", api.signed(state.positions_v3)),
            web.get("/fapi/v1/positionSide/dual", api.signed(state.position_mode)),
            web.get("/fapi/v1/order", api.signed(state.query_order)),
            web.post("/fapi/v1/order", api.order_post(state.new_order)),
            web.post("/fapi/v1/algoOrder", api.order_post(state.new_algo_order)),
            web.get("/fapi/v1/algoOrder", api.signed(state.query_algo_order)),
            web.delete("/fapi/v1/algoOrder", api.signed(state.cancel_algo_order)),
            web.get("/fapi/v1/openAlgoOrders", api.signed(state.open_algo_orders)),
            *_control_routes(state),
        ]
    )
    return app


class ExchangeEmulator:
    """The emulator on a loopback port, served by its own thread and event loop (tests, benchmark).

    with ExchangeEmulator("key", "secret") as emulator:
        emulator.set_positions({"BTCUSDT": 0.5})
        ... point the client at emulator.base_url ...
    """

    def __init__(self, api_key: str, api_secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._state = ExchangeState()
        self._app = build_app(self._state, api_key, api_secret)
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        sock = socket.create_server((self._host, self._port), backlog=1024)
        self._port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="exchange-emulator", daemon=True)
        self._thread.start()
        self._runner = web.AppRunner(self._app, access_log=None)
        asyncio.run_coroutine_threadsafe(self._serve(self._runner, sock), self._loop).result()

    @staticmethod
    async def _serve(runner: web.AppRunner, sock: socket.socket) -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> "ExchangeEmulator":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def orders(self) -> list[OrderLogEntry]:
        return self._state.order_log()

    def position_amount(self, symbol: str) -> float:
        return float(self._state.position_amount(symbol))

    def set_positions(self, amounts: Mapping[str, float | str]) -> None:
        self._state.set_positions(amounts)

    def set_mark_prices(self, prices: Mapping[str, float | str]) -> None:
        self._state.set_mark_prices(prices)

    def set_faults(self, faults: Faults) -> None:
        self._state.set_faults(faults)

    def reset(self) -> None:
        self._state.reset()

    def open_algo_orders(self, symbol: str) -> list[dict[str, Any]]:
        """The algo orders open for a symbol, as GET /fapi/v1/openAlgoOrders lists them."""
        return self._state.open_algo_orders({"symbol": symbol})


# --- command line -------------------------------------------------------------------------------


class _StartRefused(Exception):
    """A reason not to start, worded for the operator."""


def _symbol_number(text: str) -> tuple[str, str]:
    symbol, sep, number = text.partition("=")
    if not sep or symbol not in MARKETS:
        raise argparse.ArgumentTypeError(
            f"expected SYMBOL=NUMBER with SYMBOL one of {sorted(MARKETS)}, got {text!r}"
        )
    return symbol, number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=EMULATOR_NAME,
        description="A Binance USD-M Futures emulator for tests, benchmarks and the lab. "
        "Credentials: $CREDENTIALS_DIRECTORY/BINANCE_API_KEY and BINANCE_API_SECRET, else the environment "
        "variables of the same names.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    parser.add_argument(
        "--position",
        type=_symbol_number,
        action="append",
        default=[],
        metavar="SYMBOL=AMOUNT",
        help="an initial signed position, e.g. BTCUSDT=0.5 (repeatable)",
    )
    parser.add_argument(
        "--mark",
        type=_symbol_number,
        action="append",
        default=[],
        metavar="SYMBOL=PRICE",
        help="an initial mark price, e.g. BTCUSDT=65000 (repeatable)",
    )
    parser.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="listen on a non-loopback address (the control endpoints are unauthenticated)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        if not is_loopback_host(args.host) and not args.allow_non_loopback:
            raise _StartRefused(
                f"--host {args.host} is not a loopback address; the control endpoints are unauthenticated, "
                "so pass --allow-non-loopback only on an isolated network"
            )
        credentials = load_credentials(os.environ)  # read as the service reads them
        state = ExchangeState()
        state.set_positions(dict(args.position))
        state.set_mark_prices(dict(args.mark))
    except (_StartRefused, ConfigError, ValueError) as error:
        print(f"{EMULATOR_NAME}: refusing to start: {error}", file=sys.stderr)
        return 2
    log.info(
        "%s %s listening on http://%s:%d, symbols %s",
        EMULATOR_NAME,
        __version__,
        args.host,
        args.port,
        ",".join(sorted(MARKETS)),
    )
    try:
        web.run_app(
            build_app(state, credentials.api_key, credentials.api_secret),
            host=args.host,
            port=args.port,
            access_log=None,
            print=None,
            backlog=1024,
        )
    except OSError as error:
        print(f"{EMULATOR_NAME}: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
