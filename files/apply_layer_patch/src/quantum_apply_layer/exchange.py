"""The exchange adapter: Binance USD-M Futures through ccxt's `binanceusdm` (ccxt signs every request).

- Sends are never retried: a retried POST can open a second order. After a send fails with an unknown
  outcome (`ExchangeError.outcome_unknown`), the caller looks the order up before trying again.
- Lookups (ping, positions, orders) retry network failures and timeouts a few times with a short backoff.
- Stop orders and lookups use /fapi/v1/order, as the project's contract fixes; Binance's Dec-2025 move of
  conditional orders to /fapi/v1/algoOrder is a known divergence, recorded in the README.
- Markets are loaded once, in `open()`; ccxt keeps its clock unadjusted and its throttle off, so one
  order is one HTTP request (the service's own rate gates pace the orders).
"""

import hashlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from quantum_apply_layer import metrics
from quantum_apply_layer.market_filters import MarketFilters

ErrorKind = Literal["network", "timeout", "rejected", "auth", "rate_limit", "other"]

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_CLIENT_ORDER_ID_MAX = 36
_ORDER_NOT_FOUND = -2013
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
    status: str  # the exchange's status, e.g. FILLED, NEW
    filled_qty: float


@dataclass(frozen=True)
class Position:
    amount: float  # signed: long > 0, short < 0, flat 0
    mark_price: float  # 0.0 when the exchange gave none


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
    if isinstance(error, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection):
        return "rate_limit"
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


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, ExchangeError) and error.kind in ("network", "timeout")


def _ack(order: dict[str, Any]) -> OrderAck:
    """An order as Binance answers it on /fapi/v1/order."""
    return OrderAck(
        client_order_id=str(order.get("clientOrderId") or ""),
        exchange_order_id=str(order.get("orderId") or ""),
        status=str(order.get("status") or ""),
        filled_qty=float(order.get("executedQty") or 0),
    )


class Exchange:
    def __init__(self, base_url: str, api_key: str, api_secret: str, timeout_s: float) -> None:
        root = base_url.rstrip("/")
        self._client = ccxt_async.binanceusdm(
            {
                "apiKey": api_key,
                "secret": api_secret,
                "timeout": max(1, round(timeout_s * 1000)),
                "enableRateLimit": False,
                "urls": {"api": {name: f"{root}/fapi/{version}" for name, version in _FAPI_VERSIONS.items()}},
                "options": {
                    "fetchMarkets": {"types": ["linear"]},
                    "fetchCurrencies": False,
                    "adjustForTimeDifference": False,
                },
            }
        )
        self._unified_symbols: dict[str, str] = {}

    async def open(self) -> None:
        """Load the markets once (GET /fapi/v1/exchangeInfo)."""
        markets: dict[str, Any] = await self._lookup("exchange_info", self._client.load_markets)
        self._unified_symbols = {
            market["id"]: market["symbol"]
            for market in markets.values()
            if market.get("linear") and market.get("swap")
        }

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        await self._lookup("ping", self._client.fapiPublicGetPing)

    async def position(self, symbol: str) -> Position:
        """The signed position (long > 0) of a Binance symbol id like BTCUSDT, and its mark price."""
        self._unified(symbol)  # refuses an unknown symbol before any request
        rows: list[dict[str, Any]] = await self._lookup(
            "position_risk", lambda: self._client.fapiPrivateV3GetPositionRisk({"symbol": symbol})
        )
        mine = [row for row in rows if row.get("symbol") == symbol]
        amount = math.fsum(float(row["positionAmt"]) for row in mine)
        mark = max((float(row.get("markPrice") or 0) for row in mine), default=0.0)
        return Position(amount, mark)

    async def find_order(self, symbol: str, client_order_id: str) -> OrderAck | None:
        """The order with that client id (GET /fapi/v1/order); None when the exchange has none (-2013)."""
        self._unified(symbol)  # refuses an unknown symbol before any request
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        try:
            order: dict[str, Any] = await self._lookup(
                "order_query", partial(self._client.fapiPrivateGetOrder, params), absent_is_normal=True
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
        self, symbol: str, side: Literal["BUY", "SELL"], quantity: float, client_order_id: str
    ) -> OrderAck:
        unified = self._unified(symbol)
        if not (math.isfinite(quantity) and quantity > 0):
            raise self._local_rejection(f"quantity must be a positive number, got {quantity}")
        try:
            amount = float(self._client.amount_to_precision(unified, quantity))
        except ccxt_errors.BaseError as error:
            raise self._local_rejection(f"{symbol} quantity {quantity} rounds to nothing: {error}") from error
        params = {"reduceOnly": True, "newClientOrderId": client_order_id}
        metrics.apply_orders_sent_total.labels(type="MARKET").inc()
        order = await self._request(
            "order_new",
            lambda: self._client.create_order(unified, "market", side.lower(), amount, None, params),
        )
        return _ack(order["info"])

    async def send_stop_market_close(
        self, symbol: str, side: Literal["BUY", "SELL"], stop_price: float, client_order_id: str
    ) -> OrderAck:
        """A STOP_MARKET with closePosition=true: when triggered it closes whatever the position is then."""
        unified = self._unified(symbol)
        if not (math.isfinite(stop_price) and stop_price > 0):
            raise self._local_rejection(f"stop price must be a positive number, got {stop_price}")
        trigger = self._client.price_to_precision(unified, stop_price)
        if float(trigger) <= 0:
            raise self._local_rejection(f"{symbol} stop price {stop_price} rounds to nothing")
        # ccxt's create_order would route a stop to /fapi/v1/algoOrder; the implicit method posts it as is.
        params = {
            "symbol": symbol,
            "side": side,
            "type": "STOP_MARKET",
            "stopPrice": trigger,
            "closePosition": "true",
            "newClientOrderId": client_order_id,
        }
        metrics.apply_orders_sent_total.labels(type="STOP_MARKET").inc()
        order: dict[str, Any] = await self._request(
            "order_new", partial(self._client.fapiPrivatePostOrder, params)
        )
        return _ack(order)

    # --- internals ---------------------------------------------------------------------------------

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

    async def _lookup(
        self, endpoint: str, call: Callable[[], Awaitable[T]], *, absent_is_normal: bool = False
    ) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(_LOOKUP_ATTEMPTS),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        return await retrying(self._request, endpoint, call, absent_is_normal=absent_is_normal)

    async def _request(
        self, endpoint: str, call: Callable[[], Awaitable[T]], *, absent_is_normal: bool = False
    ) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except ccxt_errors.BaseError as error:
            raise self._failure(error, absent_is_normal) from error
        finally:
            metrics.apply_exchange_request_duration_seconds.labels(endpoint=endpoint).observe(
                time.perf_counter() - started
            )
        metrics.apply_exchange_up.set(1)
        return result

    @staticmethod
    def _failure(error: ccxt_errors.BaseError, absent_is_normal: bool) -> ExchangeError:
        code = _error_code(error)
        kind = _error_kind(error, code)
        if kind in ("network", "timeout"):
            metrics.apply_exchange_up.set(0)
        elif kind != "other":
            metrics.apply_exchange_up.set(1)
        # A lookup answered "no such order" is an answer, not a failure.
        if not (absent_is_normal and code == _ORDER_NOT_FOUND):
            metrics.apply_exchange_errors_total.labels(kind=kind).inc()
        return ExchangeError(kind, str(error) or type(error).__name__, code)
