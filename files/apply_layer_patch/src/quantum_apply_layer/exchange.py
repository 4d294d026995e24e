"""The exchange adapter: Binance USD-M Futures through ccxt's `binanceusdm` (ccxt signs every request but
a close sent on the websocket API).

- Sends are never retried: a retried POST can open a second order. After a send fails with an unknown
  outcome (`ExchangeError.outcome_unknown`), the caller looks the order up before trying again.
- Lookups (ping, positions, orders) retry network failures and timeouts a few times with a short backoff.
- Reduce-only closes go to /fapi/v1/order and ask for the order's final state (`newOrderRespType=RESULT`;
  an answer that is only `NEW` is looked up once): by the websocket API's `order.place` on a held
  connection while it is open (`order_socket.py`, less Python per close), else by REST. Protective
  stops are conditional orders on the algo order API (/fapi/v1/algoOrder, `clientAlgoId`), routed
  there by ccxt.
- Every request first passes the limits (`exchange_limits`): weight and order counts shared in Redis by
  every process on the account, fed by the `X-MBX-*` headers (or the websocket API's `rateLimits`);
  after a 429 or a 418 nothing is sent until `Retry-After` has passed. ccxt's own throttle stays off:
  the shared limiter is the one that counts.
- The clock follows the exchange's (ccxt's `adjustForTimeDifference`, measured again every minute, before
  a lookup: the reconciliation reads positions every few seconds, and an order never waits a round trip
  for the clock) and every signed request carries an explicit `recvWindow`; a `-1021` measures it again
  at once, and only a lookup is tried again.
- At start the account must be in one-way position mode: hedge mode is refused (`PositionModeRefused`).
"""

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from quantum_apply_layer import metrics
from quantum_apply_layer.exchange_limits import (
    BINANCE_LIMITS,
    EMERGENCY_SHARE,
    ROUTINE_SHARE,
    Budget,
    SharedLimiter,
    limits_from_exchange_info,
    share,
)
from quantum_apply_layer.market_filters import MarketFilters
from quantum_apply_layer.order_socket import OrderSocket, OrderSocketLost
from quantum_apply_layer.order_writes import trace_writes

log = logging.getLogger(__name__)

ErrorKind = Literal["network", "timeout", "rejected", "auth", "rate_limit", "other"]

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_CLIENT_ORDER_ID_MAX = 36
_ORDER_NOT_FOUND = -2013
_TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
_IP_BANNED = 418
_UNKNOWN_ORDER_SENT = -2011
_CLOCK_REFRESH_S = 60.0
# Too much weight (-1003), too many orders (-1015): refused before anything was done.
_LIMIT_CODES = frozenset({-1003, -1015})
# Binance: "Timeout waiting for response from backend server. Send status unknown".
_SEND_STATUS_UNKNOWN = -1007
_LOOKUP_ATTEMPTS = 3
_ERROR_CODE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_FAPI_VERSIONS = {
    "fapiPublic": "v1",
    "fapiPublicV2": "v2",
    "fapiPublicV3": "v3",
    "fapiPrivate": "v1",
    "fapiPrivateV2": "v2",
    "fapiPrivateV3": "v3",
}

T = TypeVar("T")


@dataclass(frozen=True)
class OrderAck:
    client_order_id: str
    exchange_order_id: str
    status: str  # the exchange's status, e.g. FILLED, EXPIRED, NEW
    filled_qty: float
    orig_qty: float  # what was asked; 0 for a closePosition stop


@dataclass(frozen=True)
class StopOrder:
    """A conditional order on the algo order API, as GET /fapi/v1/openAlgoOrders lists it."""

    algo_id: str
    client_algo_id: str
    side: str
    order_type: str
    trigger_price: float
    close_position: bool


@dataclass(frozen=True)
class Position:
    amount: float  # signed: long > 0, short < 0, flat 0
    mark_price: float  # 0.0 when the exchange gave none


class PositionModeRefused(Exception):
    """The account is in hedge mode; the apply layer trades one-way mode only."""


class _How(TypedDict, total=False):
    """How a request is made: an answer "no such order" is normal (a lookup that may find nothing); the
    request is an emergency close's and may use the headroom kept for it; its cost was counted already,
    with the plan's claim (claim.lua), so only a Retry-After can still keep it home."""

    absent_is_normal: bool
    emergency: bool
    counted: bool


class ExchangeError(Exception):
    """A failed exchange request. `kind` is one of network, timeout, rejected, auth, rate_limit, other;
    `code` is Binance's error code when the exchange answered with one."""

    def __init__(self, kind: ErrorKind, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.code = code

    @property
    def outcome_unknown(self) -> bool:
        """True when a send may have reached the exchange anyway: look the order up before resending."""
        return self.kind in ("network", "timeout", "other")


def client_order_id(plan_id: str, step_index: int) -> str:
    """qh-<plan_id>-<step_index> when that fits Binance's 36 chars of [.A-Z:/a-z0-9_-];
    else qh-<sha256 of plan_id, cut to fit>-<step_index>, the same in every process."""
    if step_index < 0:
        raise ValueError(f"step_index must not be negative, got {step_index}")
    readable = f"qh-{plan_id}-{step_index}"
    if CLIENT_ORDER_ID_PATTERN.match(readable):
        return readable
    suffix = f"-{step_index}"
    digest = hashlib.sha256(plan_id.encode()).hexdigest()
    return f"qh-{digest[: _CLIENT_ORDER_ID_MAX - len('qh-') - len(suffix)]}{suffix}"


def _error_code(error: Exception) -> int | None:
    # ccxt puts Binance's JSON answer in the message: binanceusdm {"code":-2022,"msg":"..."}
    match = _ERROR_CODE.search(str(error))
    return int(match.group(1)) if match else None


def _error_kind(error: ccxt_errors.BaseError, code: int | None) -> ErrorKind:
    if isinstance(error, ccxt_errors.RequestTimeout) or code == _SEND_STATUS_UNKNOWN:
        return "timeout"
    if isinstance(error, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection) or code in _LIMIT_CODES:
        return "rate_limit"
    if code == _TIMESTAMP_OUTSIDE_RECV_WINDOW:
        return "rejected"  # the exchange refused the request's timestamp: nothing was done
    if isinstance(error, ccxt_errors.AuthenticationError):
        return "auth"
    if isinstance(error, ccxt_errors.InvalidNonce):
        return "rejected"  # -1021: the exchange answered and refused the request's timestamp
    if isinstance(error, ccxt_errors.NetworkError) or (
        isinstance(error, ccxt_errors.OperationFailed) and code
    ):
        return "network"  # unreachable, 5xx, or Binance's -1000/-1001 internal errors
    if isinstance(error, ccxt_errors.ExchangeError) and code is not None:
        return "rejected"
    return "other"


class _Throttled(ccxt_errors.DDoSProtection):  # type: ignore[misc]
    """A 429 or 418 with the exchange's Retry-After."""

    def __init__(self, message: str, http_status: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retry_after_s = retry_after_s


class _BinanceUsdm(ccxt_async.binanceusdm):  # type: ignore[misc]
    """ccxt's client, keeping the limit headers of every answer and the Retry-After of a refusal."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.limit_headers: dict[str, str] = {}

    def handle_errors(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: Any,
        body: str,
        response: Any,
        request_headers: Any,
        request_body: Any,
    ) -> Any:
        seen = {str(name).lower(): str(value) for name, value in (headers or {}).items()}
        self.limit_headers = {name: value for name, value in seen.items() if name.startswith("x-mbx-")}
        if code in (429, _IP_BANNED):
            retry_after = _int_header(seen, "retry-after")
            raise _Throttled(f"{self.id} {code} {reason} {body}", code, float(retry_after or 60))
        return super().handle_errors(
            code, reason, url, method, headers, body, response, request_headers, request_body
        )


# The websocket API's `rateLimits` entries, by the REST header that carries the same count.
_RATE_LIMIT_HEADERS: dict[tuple[object, object, object], str] = {
    ("REQUEST_WEIGHT", "MINUTE", 1): "x-mbx-used-weight-1m",
    ("ORDERS", "SECOND", 10): "x-mbx-order-count-10s",
    ("ORDERS", "MINUTE", 1): "x-mbx-order-count-1m",
}


def _limit_headers(rate_limits: object) -> dict[str, str]:
    """A websocket API answer's `rateLimits`, as the `X-MBX-*` headers a REST answer would carry."""
    headers: dict[str, str] = {}
    for entry in rate_limits if isinstance(rate_limits, list) else []:
        if not isinstance(entry, dict):
            continue
        name = _RATE_LIMIT_HEADERS.get(
            (entry.get("rateLimitType"), entry.get("interval"), entry.get("intervalNum"))
        )
        if name is not None and isinstance(entry.get("count"), int):
            headers[name] = str(entry["count"])
    return headers


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int_header(headers: dict[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, ExchangeError) and error.kind in ("network", "timeout")


def _algo_ack(order: dict[str, Any]) -> OrderAck:
    """An algo order as Binance answers it on /fapi/v1/algoOrder."""
    return OrderAck(
        client_order_id=str(order.get("clientAlgoId") or ""),
        exchange_order_id=str(order.get("algoId") or ""),
        status=str(order.get("algoStatus") or ""),
        filled_qty=0.0,
        orig_qty=0.0,
    )


def _ack(order: dict[str, Any]) -> OrderAck:
    """An order as Binance answers it on /fapi/v1/order."""
    return OrderAck(
        client_order_id=str(order.get("clientOrderId") or ""),
        exchange_order_id=str(order.get("orderId") or ""),
        status=str(order.get("status") or ""),
        filled_qty=float(order.get("executedQty") or 0),
        orig_qty=float(order.get("origQty") or 0),
    )


class Exchange:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        timeout_s: float,
        limiter: SharedLimiter | None = None,
        recv_window_ms: int = 5000,
        order_socket_url: str | None = None,
    ) -> None:
        """`order_socket_url`: the websocket API (`websocket_hosts.order_socket_url`) to send closes by
        with an HMAC key; None, or a PEM key, sends every order by REST."""
        root = base_url.rstrip("/")
        self._client = _BinanceUsdm(
            {
                "apiKey": api_key,
                "secret": api_secret,
                "timeout": max(1, round(timeout_s * 1000)),
                "enableRateLimit": False,
                "urls": {"api": {name: f"{root}/fapi/{version}" for name, version in _FAPI_VERSIONS.items()}},
                "options": {
                    "fetchMarkets": {"types": ["linear"]},
                    "fetchCurrencies": False,
                    "adjustForTimeDifference": True,
                    "recvWindow": recv_window_ms,
                },
            }
        )
        self._limiter = limiter
        self._timeout_s = timeout_s
        self._recv_window_ms = recv_window_ms
        self._orders: OrderSocket | None = None
        # The door signs with HMAC; an Ed25519 or RSA key (a PEM secret, which ccxt signs with) sends by REST.
        if order_socket_url is not None and "PRIVATE KEY" not in api_secret:
            self._orders = OrderSocket(
                order_socket_url,
                api_key,
                api_secret,
                self._client.nonce,  # the exchange's clock, as ccxt measured it
                partial(self._pass_limits, "order_socket", False, False),
                self._handshake_refused,
            )
        self._orders_task: asyncio.Task[None] | None = None
        if self._orders is None:  # no door to be down: nothing to alert on
            metrics.apply_exchange_order_socket_up.set(math.nan)
        self._routine_budget = share(BINANCE_LIMITS, ROUTINE_SHARE)
        self._emergency_budget = share(BINANCE_LIMITS, EMERGENCY_SHARE)
        self._unified_symbols: dict[str, str] = {}
        self._clock_measured_at = -math.inf
        self._blocked_until = 0.0  # time.monotonic() before which nothing is sent (Retry-After)
        self._banned_until = 0.0
        metrics.apply_exchange_ban_remaining_seconds.set_function(
            lambda: max(0.0, self._banned_until - time.monotonic())
        )

    async def open(self) -> None:
        """Measure the clock, read the limits and load the markets (GET /fapi/v1/exchangeInfo), and
        refuse an account in hedge mode (GET /fapi/v1/positionSide/dual)."""
        trace_writes(self._client)  # before the first request: the moment each order is written
        await self._sync_clock()
        info: dict[str, Any] = await self._lookup("exchange_info", self._client.fapiPublicGetExchangeInfo)
        limits = limits_from_exchange_info(info)
        self._routine_budget = share(limits, ROUTINE_SHARE)
        self._emergency_budget = share(limits, EMERGENCY_SHARE)
        markets: dict[str, Any] = await self._lookup("exchange_info", self._client.load_markets)
        self._unified_symbols = {
            market["id"]: market["symbol"]
            for market in markets.values()
            if market.get("linear") and market.get("swap")
        }
        mode: dict[str, Any] = await self._lookup(
            "position_mode", self._client.fapiPrivateGetPositionSideDual
        )
        if mode.get("dualSidePosition") in (True, "true"):
            raise PositionModeRefused(
                "the Binance account is in hedge mode (dual-side positions); the apply layer closes "
                "positions in one-way mode only. Switch the account to one-way mode (Binance: Preferences "
                "> Position Mode > One-way, possible only with no open position or order), then start again."
            )
        if self._orders is not None and self._orders_task is None:
            self._orders_task = asyncio.create_task(self._orders.run(), name="order-socket")
            if not await self._orders.wait_connected(self._timeout_s):
                log.warning("websocket API not open yet: closes go by REST until it is")

    def budget(self, emergency: bool) -> Budget:
        """The share of the account's limits a request may use: routine, or an emergency close's."""
        return self._emergency_budget if emergency else self._routine_budget

    async def close(self) -> None:
        try:
            if self._orders_task is not None:
                self._orders_task.cancel()
                # Waits without the task's own CancelledError, so a cancellation of close() still raises.
                await asyncio.wait({self._orders_task})
                self._orders_task = None
        finally:
            await self._client.close()
            # The gauge reads this adapter's ban; a closed adapter reports none.
            metrics.apply_exchange_ban_remaining_seconds.set_function(lambda: 0.0)

    async def ping(self) -> None:
        await self._lookup("ping", self._client.fapiPublicGetPing)

    async def position(self, symbol: str, *, emergency: bool = False) -> Position:
        """The signed position (long > 0) of a Binance symbol id like BTCUSDT, and its mark price."""
        self._unified(symbol)  # refuses an unknown symbol before any request
        rows: list[dict[str, Any]] = await self._lookup(
            "position_risk",
            lambda: self._client.fapiPrivateV3GetPositionRisk({"symbol": symbol}),
            emergency=emergency,
        )
        mine = [row for row in rows if row.get("symbol") == symbol]
        amount = math.fsum(float(row["positionAmt"]) for row in mine)
        mark = max((float(row.get("markPrice") or 0) for row in mine), default=0.0)
        return Position(amount, mark)

    async def find_order(
        self, symbol: str, client_order_id: str, *, emergency: bool = False
    ) -> OrderAck | None:
        """The order with that client id (GET /fapi/v1/order); None when the exchange has none (-2013)."""
        self._unified(symbol)  # refuses an unknown symbol before any request
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        try:
            order: dict[str, Any] = await self._lookup(
                "order_query",
                partial(self._client.fapiPrivateGetOrder, params),
                absent_is_normal=True,
                emergency=emergency,
            )
        except ExchangeError as error:
            if error.code == _ORDER_NOT_FOUND:
                return None
            raise
        return _ack(order)

    async def positions(self) -> dict[str, Position]:
        """Every open position (GET /fapi/v3/positionRisk without a symbol, weight 5): a reconciliation."""
        rows: list[dict[str, Any]] = await self._lookup(
            "position_risk", self._client.fapiPrivateV3GetPositionRisk
        )
        held: dict[str, Position] = {}
        for row in rows:
            symbol = str(row.get("symbol"))
            before = held.get(symbol, Position(0.0, 0.0))
            held[symbol] = Position(
                before.amount + float(row["positionAmt"]),
                max(before.mark_price, float(row.get("markPrice") or 0)),
            )
        return held

    def market_filters(self, symbol: str) -> MarketFilters:
        """The symbol's filters from the exchangeInfo loaded in open(): no request."""
        market = self._client.markets[self._unified(symbol)]
        return MarketFilters.from_exchange_info(symbol, market["info"].get("filters") or [])

    async def open_listen_key(self) -> str:
        """POST /fapi/v1/listenKey: the user data stream's key (the same one while it is valid)."""
        answer: dict[str, Any] = await self._lookup("listen_key", self._client.fapiPrivatePostListenKey)
        return str(answer["listenKey"])

    async def keep_listen_key(self) -> None:
        """PUT /fapi/v1/listenKey: another 60 minutes; -1125 when the key has expired."""
        await self._lookup("listen_key", self._client.fapiPrivatePutListenKey)

    async def send_reduce_only_market(
        self,
        symbol: str,
        side: Literal["BUY", "SELL"],
        quantity: float,
        client_order_id: str,
        *,
        emergency: bool = False,
        counted: bool = False,
    ) -> OrderAck:
        """A reduce-only MARKET order; the answer is what the exchange filled (FILLED, or EXPIRED with
        part executed), looked up once when the exchange answered only that it took the order (NEW)."""
        unified = self._unified(symbol)
        if not (math.isfinite(quantity) and quantity > 0):
            raise self._local_rejection(f"quantity must be a positive number, got {quantity}")
        try:
            amount = self._client.amount_to_precision(unified, quantity)
        except ccxt_errors.BaseError as error:
            raise self._local_rejection(f"{symbol} quantity {quantity} rounds to nothing: {error}") from error
        # Binance's own parameters on ccxt's implicit endpoint, which signs them: the unified create_order
        # would build the same parameters with 0.2 ms more work. RESULT: the answer carries the final state.
        params = {
            "symbol": symbol,
            "side": side,
            "type": "MARKET",
            "quantity": amount,
            "reduceOnly": "true",
            "newClientOrderId": client_order_id,
            "newOrderRespType": "RESULT",
        }
        metrics.apply_orders_sent_total.labels(type="MARKET").inc()
        order: dict[str, Any] = await self._request(
            "order_new", partial(self._post_order, params), emergency=emergency, counted=counted
        )
        ack = _ack(order)
        if ack.status == "NEW":
            found = await self.find_order(symbol, client_order_id, emergency=emergency)
            return found if found is not None else ack
        return ack

    async def send_stop_market_close(
        self,
        symbol: str,
        side: Literal["BUY", "SELL"],
        stop_price: float,
        client_order_id: str,
        *,
        counted: bool = False,
    ) -> OrderAck:
        """A protective STOP_MARKET with closePosition=true on the algo order API (POST
        /fapi/v1/algoOrder, `clientAlgoId`): when triggered it closes whatever the position is then."""
        unified = self._unified(symbol)
        if not (math.isfinite(stop_price) and stop_price > 0):
            raise self._local_rejection(f"stop price must be a positive number, got {stop_price}")
        trigger = self._client.price_to_precision(unified, stop_price)
        if float(trigger) <= 0:
            raise self._local_rejection(f"{symbol} stop price {stop_price} rounds to nothing")
        # ccxt routes a conditional order of a swap market to /fapi/v1/algoOrder (algoType=CONDITIONAL).
        params = {"triggerPrice": trigger, "closePosition": True, "clientAlgoId": client_order_id}
        metrics.apply_orders_sent_total.labels(type="STOP_MARKET").inc()
        order = await self._request(
            "algo_new",
            lambda: self._client.create_order(unified, "market", side.lower(), None, None, params),
            counted=counted,
        )
        return _algo_ack(order["info"])

    async def find_stop(self, symbol: str, client_algo_id: str) -> OrderAck | None:
        """The algo order with that clientAlgoId (GET /fapi/v1/algoOrder); None when there is none."""
        unified = self._unified(symbol)
        params = {"trigger": True, "clientAlgoId": client_algo_id}
        try:
            order: dict[str, Any] = await self._lookup(
                "algo_query",
                lambda: self._client.fetch_order(None, unified, params),
                absent_is_normal=True,
            )
        except ExchangeError as error:
            if error.code == _ORDER_NOT_FOUND:
                return None
            raise
        return _algo_ack(order["info"])

    async def open_stops(self, symbol: str) -> list[StopOrder]:
        """The symbol's open conditional orders (GET /fapi/v1/openAlgoOrders)."""
        self._unified(symbol)
        rows: list[dict[str, Any]] = await self._lookup(
            "algo_open", lambda: self._client.fapiPrivateGetOpenAlgoOrders({"symbol": symbol})
        )
        return [
            StopOrder(
                algo_id=str(row.get("algoId") or ""),
                client_algo_id=str(row.get("clientAlgoId") or ""),
                side=str(row.get("side") or ""),
                order_type=str(row.get("orderType") or ""),
                trigger_price=float(row.get("triggerPrice") or 0),
                close_position=row.get("closePosition") in (True, "true"),
            )
            for row in rows
            if row.get("symbol") == symbol
        ]

    async def cancel_stop(self, symbol: str, stop: StopOrder) -> None:
        """Cancel one algo order (DELETE /fapi/v1/algoOrder). Gone already (-2011) counts as cancelled."""
        unified = self._unified(symbol)
        try:
            await self._request(
                "algo_cancel",
                lambda: self._client.cancel_order(stop.algo_id, unified, {"trigger": True}),
                absent_is_normal=True,
            )
        except ExchangeError as error:
            if error.code != _UNKNOWN_ORDER_SENT:
                raise

    # --- internals ---------------------------------------------------------------------------------

    async def _post_order(self, params: dict[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order's params by the websocket API while its connection is open, else by REST.
        A websocket answer goes through ccxt's own handling of a REST answer (its status, the `X-MBX-*`
        headers its `rateLimits` stand for, its body), so that both doors are judged alike."""
        socket = self._orders
        if socket is None:
            return await self._client.fapiPrivatePostOrder(params)  # type: ignore[no-any-return]
        try:
            answer = await socket.place({**params, "recvWindow": str(self._recv_window_ms)}, self._timeout_s)
        except OrderSocketLost as lost:
            if not lost.sent:
                return await self._client.fapiPrivatePostOrder(params)  # type: ignore[no-any-return]
            unknown = f"{self._client.id} {lost}: the order's outcome is unknown"
            raise ccxt_errors.NetworkError(unknown) from lost
        except TimeoutError as late:
            raise ccxt_errors.RequestTimeout(
                f"{self._client.id} no answer on the websocket API within {self._timeout_s}s"
            ) from late
        status = answer.get("status")
        result = answer.get("result")
        if status == 200 and isinstance(result, dict):
            self._client.limit_headers = _limit_headers(answer.get("rateLimits"))
            return result
        error = _dict(answer.get("error"))
        status = status if isinstance(status, int) else 500
        headers = _limit_headers(answer.get("rateLimits"))
        if status in (429, _IP_BANNED):
            headers["retry-after"] = str(math.ceil(self._retry_after_s(error)))
        body = json.dumps(error)
        url = f"{self._client.urls['api']['fapiPrivate']}/order"
        self._client.handle_errors(status, "", url, "POST", headers, body, error, None, None)
        self._client.handle_http_status_code(status, "", url, "POST", body)
        raise ccxt_errors.ExchangeError(f"{self._client.id} websocket API answered {status} {body}")

    async def _handshake_refused(self, http_status: int, retry_after_s: float) -> None:
        """The websocket API refused the connection with a 429 or 418: as a REST refusal, nothing from
        any process until its Retry-After has passed."""
        await self._throttled(
            _Throttled(f"{self._client.id} websocket API {http_status}", http_status, retry_after_s)
        )

    def _retry_after_s(self, error: dict[str, Any]) -> float:
        """The websocket API's `retryAfter` (a time in ms) as seconds from now; 60 when it gave none."""
        data = _dict(error.get("data"))
        retry_at = data.get("retryAfter")
        if not isinstance(retry_at, int):
            return 60.0
        now = data.get("serverTime")
        return max(1.0, (retry_at - (now if isinstance(now, int) else self._client.nonce())) / 1000)

    def _unified(self, symbol: str) -> str:
        if not self._unified_symbols:
            raise RuntimeError("Exchange.open() must succeed before any other call")
        unified = self._unified_symbols.get(symbol)
        if unified is None:
            raise self._local_rejection(f"unknown symbol {symbol!r}: not a USD-M perpetual on this exchange")
        return unified

    @staticmethod
    def _local_rejection(message: str) -> ExchangeError:
        metrics.apply_exchange_errors_total.labels(kind="rejected").inc()
        return ExchangeError("rejected", message)

    async def _sync_clock(self) -> None:
        """Measure the exchange's clock (GET /fapi/v1/time); ccxt signs with it from then on."""
        self._clock_measured_at = time.monotonic()
        await self._lookup("time", self._client.load_time_difference)
        # ccxt keeps host time minus server time; the metric says how far the exchange is ahead.
        offset_ms = -float(self._client.options.get("timeDifference") or 0)
        metrics.apply_exchange_clock_offset_seconds.set(offset_ms / 1000)

    async def _lookup(self, endpoint: str, call: Callable[[], Awaitable[T]], **how: Unpack[_How]) -> T:
        """A read: retried while the failure is transient, and once more after the clock was re-measured."""
        if endpoint != "time" and time.monotonic() - self._clock_measured_at > _CLOCK_REFRESH_S:
            with contextlib.suppress(ExchangeError):  # an unreachable exchange fails the lookup itself
                await self._sync_clock()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(_LOOKUP_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        request = partial(self._request, endpoint, call, **how)
        try:
            return await retrying(request)
        except ExchangeError as error:
            if error.code != _TIMESTAMP_OUTSIDE_RECV_WINDOW or endpoint == "time":
                raise
        # The clock has been measured again (by _request); a lookup changes nothing, so once more.
        return await request()

    async def _request(self, endpoint: str, call: Callable[[], Awaitable[T]], **how: Unpack[_How]) -> T:
        """One request, within the exchange's limits, its failure named and its headers counted."""
        absent_is_normal = how.get("absent_is_normal", False)
        await self._pass_limits(endpoint, how.get("emergency", False), how.get("counted", False))
        started = time.perf_counter()
        try:
            result = await call()
        except _Throttled as error:
            await self._throttled(error)
            raise self._failure(error, absent_is_normal) from error
        except ccxt_errors.BaseError as error:
            failure = self._failure(error, absent_is_normal)
            if failure.code == _TIMESTAMP_OUTSIDE_RECV_WINDOW and endpoint != "time":
                await self._sync_clock()
            raise failure from error
        finally:
            metrics.apply_exchange_request_duration_seconds.labels(endpoint=endpoint).observe(
                time.perf_counter() - started
            )
            await self._observe_headers()
        metrics.apply_exchange_up.set(1)
        return result

    async def _pass_limits(self, endpoint: str, emergency: bool, counted: bool) -> None:
        """Raise, sending nothing, when a limit or a Retry-After says not now. A request `counted` with
        its claim passed the shared limiter there: only this process's Retry-After is checked."""
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            metrics.apply_exchange_held_back_total.labels("blocked").inc()
            raise ExchangeError(
                "rate_limit", f"held back: the exchange asked to wait {wait:.0f}s more (Retry-After)"
            )
        if self._limiter is None or counted:
            return
        held = await self._limiter.reserve(endpoint, self.budget(emergency))
        if held is None:
            return
        metrics.apply_exchange_held_back_total.labels(held.limit).inc()
        if held.limit == "blocked":
            self._blocked_until = max(self._blocked_until, time.monotonic() + held.wait_s)
        detail = held.detail or f"{held.limit} budget used up for {held.wait_s:.1f}s more"
        raise ExchangeError("rate_limit", f"held back, nothing sent: {detail}")

    async def _throttled(self, error: _Throttled) -> None:
        """A 429 or 418: nothing more from any process until Retry-After has passed."""
        until = time.monotonic() + error.retry_after_s
        self._blocked_until = max(self._blocked_until, until)
        metrics.apply_exchange_throttled_total.labels(str(error.http_status)).inc()
        if error.http_status == _IP_BANNED:
            self._banned_until = max(self._banned_until, until)
        if self._limiter is not None:
            await self._limiter.block(error.retry_after_s)

    async def _observe_headers(self) -> None:
        headers, self._client.limit_headers = self._client.limit_headers, {}
        if not headers:
            return
        used = _int_header(headers, "x-mbx-used-weight-1m")
        orders_10s = _int_header(headers, "x-mbx-order-count-10s")
        orders_1m = _int_header(headers, "x-mbx-order-count-1m")
        if used is not None:
            metrics.apply_exchange_used_weight.set(used)
        if orders_10s is not None:
            metrics.apply_exchange_order_count.labels("10s").set(orders_10s)
        if orders_1m is not None:
            metrics.apply_exchange_order_count.labels("1m").set(orders_1m)
        if self._limiter is not None:
            await self._limiter.observe(
                -1 if used is None else used,
                -1 if orders_10s is None else orders_10s,
                -1 if orders_1m is None else orders_1m,
            )

    @staticmethod
    def _failure(error: ccxt_errors.BaseError, absent_is_normal: bool) -> ExchangeError:
        code = _error_code(error)
        kind = _error_kind(error, code)
        if kind in ("network", "timeout"):
            metrics.apply_exchange_up.set(0)
        elif kind != "other":
            metrics.apply_exchange_up.set(1)
        # A lookup answered "no such order" is an answer, not a failure.
        if not (absent_is_normal and code in (_ORDER_NOT_FOUND, _UNKNOWN_ORDER_SENT)):
            metrics.apply_exchange_errors_total.labels(kind=kind).inc()
        return ExchangeError(kind, str(error) or type(error).__name__, code)
