"""The emulated USD-M account: positions, mark prices, the order book and Binance's rules for orders.

No HTTP here: the server in emulator.py parses a request into a dict of strings and calls one method.
Everything is guarded by one lock because tests change positions and faults from their own thread
while the server's event loop thread serves orders.

Binance rules kept on purpose (the service must cope with each in production):
- a client order id is unique among OPEN orders only; a FILLED order's id is accepted again;
- conditional types (STOP_MARKET, ...) are refused on /fapi/v1/order with -4120: they live on the algo
  order API (/fapi/v1/algoOrder), where a stop stays open (it never triggers here), its clientAlgoId
  cannot be used again while it is open (-4116), and a second closePosition stop in the same direction
  is refused (-4130);
- a reduce-only order that would open, flip or exceed the position is refused with -2022;
- a stop that would trigger at once is refused with -2021;
- `newOrderRespType=ACK` answers `NEW` with nothing executed; RESULT (what the adapter asks) the final state;
- in hedge mode (dual-side positions) `reduceOnly` is refused (-1106) and `positionSide` must be
  LONG or SHORT (-4061); in one-way mode only BOTH.

Settings and faults a test switches on (see `Faults`): a market fill ratio (an order filled in part
ends EXPIRED), price protection refusals (-4131), a clock offset, hedge mode, and the rate limits.
"""

import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from quantum_apply_layer.emulator_limits import LimitSettings, RateLimits
from quantum_apply_layer.emulator_markets import MARKETS, MarketSpec

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_SIDES = frozenset({"BUY", "SELL"})
_ZERO = Decimal(0)
# A long lab run or benchmark would otherwise grow without end; the oldest orders are forgotten first
# (Binance, too, stops answering lookups for old orders).
HISTORY_LIMIT = 200_000


class BinanceError(Exception):
    """An error answer exactly as Binance shapes it: an HTTP status and a {"code", "msg"} body."""

    def __init__(self, http_status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.http_status = http_status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _not_required(name: str) -> BinanceError:
    return BinanceError(400, -1106, f"Parameter '{name}' sent when not required.")


ORDER_NOT_FOUND = BinanceError(400, -2013, "Order does not exist.")
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
_ALGO_ONLY = "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
# The conditional types the emulator's algo order API serves (the ones the apply layer uses and their twin).
_ALGO_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
_INT_FIELDS_NON_NEGATIVE = ("fail_next", "latency_ms", "drop_next", "price_protect_next")
_INT_FIELDS_POSITIVE = (
    "weight_per_minute",
    "orders_per_10s",
    "orders_per_minute",
    "ban_seconds",
    "window_scale",
)


@dataclass
class Faults:
    """Faults the next order POSTs suffer, and the account's settings. Replaced as a whole by
    POST /_emulator/faults: fields left out go back to their defaults (Binance's own)."""

    fail_next: int = 0
    fail_code: int = -1001
    fail_http_status: int = 503
    fail_msg: str = "Internal error; unable to process your request. Please try again."
    latency_ms: int = 0
    drop_next: int = 0
    # Share of a MARKET order the book can fill; the rest expires (status EXPIRED, executedQty partial).
    fill_ratio: float = 1.0
    # The next N MARKET orders are refused by price protection (-4131).
    price_protect_next: int = 0
    # The exchange's clock minus the host's: signed requests are judged against the exchange's.
    clock_offset_ms: int = 0
    # Dual-side positions (hedge mode) instead of one-way.
    hedge_mode: bool = False
    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    ban_seconds: int = 120
    window_scale: int = 1

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Faults":
        defaults = cls()
        unknown = set(body) - set(asdict(defaults))
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, default in asdict(defaults).items():
            value = body.get(name, default)
            if isinstance(default, float) and type(value) is int:
                value = float(value)
            if type(value) is not type(default):
                raise ValueError(f"{name} must be a {type(default).__name__}")
            if name in _INT_FIELDS_NON_NEGATIVE and value < 0:
                raise ValueError(f"{name} must not be negative")
            if name in _INT_FIELDS_POSITIVE and value <= 0:
                raise ValueError(f"{name} must be positive")
            if name == "fill_ratio" and not 0 <= value <= 1:
                raise ValueError("fill_ratio must be between 0 and 1")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class OrderLogEntry:
    """One order POST as the emulator received it, kept for tests and the lab's smoke checks."""

    client_order_id: str | None
    order_id: int | None
    symbol: str | None
    side: str | None
    type: str | None
    quantity: float | None
    stop_price: float | None
    reduce_only: bool
    close_position: bool
    status: str  # FILLED / NEW when accepted, REJECTED or DROPPED otherwise
    code: int | None  # the Binance error code of a rejection
    received_monotonic: float

    def to_json(self) -> dict[str, Any]:
        return {
            "clientOrderId": self.client_order_id,
            "orderId": self.order_id,
            "symbol": self.symbol,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "stopPrice": self.stop_price,
            "reduceOnly": self.reduce_only,
            "closePosition": self.close_position,
            "status": self.status,
            "code": self.code,
            "receivedMonotonic": self.received_monotonic,
        }


def now_ms() -> int:
    return int(time.time() * 1000)


def _loose_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise _mandatory(name)
    return lowered == "true"


def _decimal_param(params: Mapping[str, str], name: str) -> Decimal:
    raw = params.get(name)
    if not raw:
        raise _mandatory(name)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _mandatory(name) from None
    if not value.is_finite():
        raise _mandatory(name)
    return value


def _market(params: Mapping[str, str]) -> MarketSpec:
    symbol = params.get("symbol")
    if not symbol:
        raise _mandatory("symbol")
    spec = MARKETS.get(symbol)
    if spec is None:
        raise BinanceError(400, -1121, "Invalid symbol.")
    return spec


def _side(params: Mapping[str, str]) -> str:
    side = params.get("side")
    if not side:
        raise _mandatory("side")
    if side not in _SIDES:
        raise BinanceError(400, -1117, "Invalid side.")
    return side


def _client_id(params: Mapping[str, str], generated: str) -> str:
    client_id = params.get("newClientOrderId")
    if client_id is None:
        return generated
    if not CLIENT_ORDER_ID_PATTERN.match(client_id):
        raise BinanceError(
            400,
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; "
            "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        )
    return client_id


def _check_quantity(spec: MarketSpec, quantity: Decimal) -> None:
    if quantity <= _ZERO:
        raise BinanceError(400, -4003, "Quantity less than or equal to zero.")
    if quantity % spec.step_size != _ZERO:
        raise BinanceError(400, -1111, "Precision is over the maximum defined for this asset.")
    if quantity < spec.min_qty:
        raise BinanceError(400, -4004, "Quantity less than min quantity.")
    if quantity > spec.market_max_qty:
        raise BinanceError(400, -4005, "Quantity greater than max quantity.")


def _check_price(spec: MarketSpec, price: Decimal) -> None:
    if price <= _ZERO:
        raise BinanceError(400, -4001, "Price less than 0.")
    if price % spec.tick_size != _ZERO:
        raise BinanceError(400, -4014, "Price not increased by tick size.")
    if price < spec.min_price:
        raise BinanceError(400, -4013, "Price less than min price.")
    if price > spec.max_price:
        raise BinanceError(400, -4016, "Price greater than max price.")


def _fmt(value: Decimal, places: int) -> str:
    return f"{value:.{places}f}"


def _round_down(quantity: Decimal, step: Decimal) -> Decimal:
    return (quantity // step) * step


def _algo_query_view(order: Mapping[str, Any]) -> dict[str, Any]:
    """An algo order as GET /fapi/v1/algoOrder shows it: never triggered here, so no actual order."""
    view = {key: value for key, value in order.items() if key not in ("activatePrice", "callbackRate")}
    view.update({"actualOrderId": "", "actualPrice": "0.00000", "tpOrderType": "", "tpTriggerPrice": ""})
    return view


@dataclass(frozen=True)
class AccountChange:
    """What the user data stream pushes: a symbol's position after a change, and the order behind it."""

    symbol: str
    amount: Decimal
    entry_price: Decimal
    order: dict[str, Any] | None  # None: the position was set from outside (a liquidation, a manual close)


# Called with the state's lock held, from whichever thread made the change; None means a reset.
StateListener = Callable[[AccountChange | None], None]


@dataclass
class _Book:
    positions: dict[str, Decimal] = field(default_factory=dict)
    entry_prices: dict[str, Decimal] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(
        default_factory=lambda: {s: m.default_mark_price for s, m in MARKETS.items()}
    )
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    order_by_client_id: dict[str, int] = field(default_factory=dict)
    open_client_ids: set[str] = field(default_factory=set)
    log: deque[OrderLogEntry] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    faults: Faults = field(default_factory=Faults)
    algo_orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    algo_by_client_id: dict[str, int] = field(default_factory=dict)


class ExchangeState:
    """The account behind the emulator's API key. Every public method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._book = _Book()
        # Exchange ids never repeat, not even across a reset, as on the real exchange.
        self._order_ids = itertools.count(8_389_765_000)
        self.limits = RateLimits()
        self._listeners: list[StateListener] = []

    def add_listener(self, listener: StateListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _notify(self, change: AccountChange | None) -> None:
        for listener in self._listeners:
            listener(change)

    def _changed(self, symbol: str, order: dict[str, Any] | None) -> None:
        amount = self._book.positions.get(symbol, _ZERO)
        entry = self._book.entry_prices.get(symbol, _ZERO) if amount else _ZERO
        self._notify(AccountChange(symbol, amount, entry, dict(order) if order else None))

    # --- control -------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._book = _Book()
            self._notify(None)
        self.limits.reset()

    def set_positions(self, amounts: Mapping[str, Any]) -> None:
        """Set signed position amounts (long > 0); symbols not named keep theirs."""
        parsed = self._parse_symbol_numbers(amounts, positive_only=False)
        with self._lock:
            for symbol, amount in parsed.items():
                self._book.positions[symbol] = amount
                self._book.entry_prices[symbol] = self._book.marks[symbol]
                self._changed(symbol, None)

    def set_mark_prices(self, prices: Mapping[str, Any]) -> None:
        parsed = self._parse_symbol_numbers(prices, positive_only=True)
        with self._lock:
            self._book.marks.update(parsed)

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self._book.faults = faults

    def faults(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._book.faults))

    def server_time_ms(self) -> int:
        """The exchange's clock: the host's plus the configured offset."""
        with self._lock:
            return now_ms() + self._book.faults.clock_offset_ms

    def limit_settings(self) -> LimitSettings:
        with self._lock:
            faults = self._book.faults
            return LimitSettings(
                faults.weight_per_minute,
                faults.orders_per_10s,
                faults.orders_per_minute,
                faults.ban_seconds,
                faults.window_scale,
            )

    def take_fault(self) -> tuple[str | None, Faults]:
        """Consume one fault for an order POST: ("drop" | "fail" | None, the fault settings)."""
        with self._lock:
            faults = self._book.faults
            if faults.drop_next > 0:
                faults.drop_next -= 1
                return "drop", Faults(**asdict(faults))
            if faults.fail_next > 0:
                faults.fail_next -= 1
                return "fail", Faults(**asdict(faults))
            return None, faults

    def order_log(self) -> list[OrderLogEntry]:
        with self._lock:
            return list(self._book.log)

    def position_amount(self, symbol: str) -> Decimal:
        with self._lock:
            return self._book.positions.get(symbol, _ZERO)

    def record_unanswered(
        self, params: Mapping[str, str], received: float, status: str, code: int | None
    ) -> None:
        """Log an order POST a fault stopped before the book saw it."""
        with self._lock:
            self._log(params, received, status, code, None)

    # --- Binance endpoints -----------------------------------------------------------------------

    def new_order(self, params: Mapping[str, str], received: float) -> dict[str, Any]:
        """POST /fapi/v1/order: MARKET orders fill at once at the mark price; STOP_MARKET orders stay NEW."""
        with self._lock:
            try:
                order = self._new_order(params)
            except BinanceError as error:
                self._log(params, received, "REJECTED", error.code, None)
                raise
            booked = self._book.orders[order["orderId"]]["status"]  # the order's state, whatever the answer
            self._log(params, received, booked, None, order["orderId"])
            self._changed(order["symbol"], order)
            return order

    def query_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/order by orderId or origClientOrderId (the newest order carrying that id)."""
        spec = _market(params)
        with self._lock:
            order_id: int | None
            if params.get("orderId"):
                try:
                    order_id = int(params["orderId"])
                except ValueError:
                    raise _mandatory("orderId") from None
            elif params.get("origClientOrderId"):
                order_id = self._book.order_by_client_id.get(params["origClientOrderId"])
            else:
                raise BinanceError(
                    400,
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
                )
            order = self._book.orders.get(order_id) if order_id is not None else None
            if order is None or order["symbol"] != spec.symbol:
                raise ORDER_NOT_FOUND
            return dict(order)

    def new_algo_order(self, params: Mapping[str, str], received: float) -> dict[str, Any]:
        """POST /fapi/v1/algoOrder: a conditional order; it stays NEW (it never triggers here)."""
        with self._lock:
            try:
                order = self._new_algo_order(params)
            except BinanceError as error:
                self._log(params, received, "REJECTED", error.code, None)
                raise
            self._log(params, received, order["algoStatus"], None, order["algoId"])
            return dict(order)

    def query_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/algoOrder by algoId or clientAlgoId (the newest carrying that id)."""
        with self._lock:
            order = self._find_algo(params)
            if order is None:
                raise ORDER_NOT_FOUND
            return _algo_query_view(order)

    def cancel_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        """DELETE /fapi/v1/algoOrder: an open algo order is CANCELED; any other is unknown (-2011)."""
        with self._lock:
            order = self._find_algo(params)
            if order is None or order["algoStatus"] != "NEW":
                raise BinanceError(400, -2011, "Unknown order sent.")
            order["algoStatus"] = "CANCELED"
            order["updateTime"] = now_ms()
            return {
                "algoId": order["algoId"],
                "clientAlgoId": order["clientAlgoId"],
                "code": "200",
                "msg": "success",
            }

    def open_algo_orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/openAlgoOrders: the open ones, of one symbol or of all."""
        symbol = _market(params).symbol if params.get("symbol") else None
        with self._lock:
            return [
                _algo_query_view(order)
                for order in self._book.algo_orders.values()
                if order["algoStatus"] == "NEW" and symbol in (None, order["symbol"])
            ]

    def open_algo_order_count(self) -> int:
        with self._lock:
            return sum(order["algoStatus"] == "NEW" for order in self._book.algo_orders.values())

    def position_mode(self, _: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/positionSide/dual."""
        with self._lock:
            return {"dualSidePosition": self._book.faults.hedge_mode}

    def positions_v2(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v2/positionRisk: one entry per symbol and position side, flat ones included."""
        specs = [_market(params)] if params.get("symbol") else list(MARKETS.values())
        with self._lock:
            return [
                self._position_v2(spec, side, amount) for spec in specs for side, amount in self._rows(spec)
            ]

    def positions_v3(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v3/positionRisk: only rows with a position, as Binance's v3 does."""
        specs = [_market(params)] if params.get("symbol") else list(MARKETS.values())
        with self._lock:
            return [
                self._position_v3(spec, side, amount)
                for spec in specs
                for side, amount in self._rows(spec)
                if amount
            ]

    # --- internals (lock held) ---------------------------------------------------------------------

    def _new_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        spec = _market(params)
        side = _side(params)
        order_type = params.get("type")
        if not order_type:
            raise _mandatory("type")
        if order_type in CONDITIONAL_TYPES:
            raise BinanceError(400, -4120, _ALGO_ONLY)
        if order_type != "MARKET":
            raise BinanceError(400, -1116, "Invalid orderType.")
        resp_type = params.get("newOrderRespType", "ACK")
        if resp_type not in ("ACK", "RESULT"):
            raise BinanceError(400, -1116, "Invalid newOrderRespType.")
        order = self._new_market_order(spec, side, params)
        self._remember(order)
        if resp_type == "ACK":
            # Accepted, not yet worked: only a lookup tells what was filled.
            return {
                **order,
                "status": "NEW",
                "executedQty": "0",
                "cumQty": "0",
                "cumQuote": "0",
                "avgPrice": "0.00",
            }
        return order

    def _position_side(self, params: Mapping[str, str]) -> str:
        """Binance's position mode rules: one-way takes BOTH only; hedge mode LONG or SHORT, no reduceOnly."""
        position_side = params.get("positionSide", "BOTH")
        if self._book.faults.hedge_mode:
            if "reduceOnly" in params:
                raise _not_required("reduceOnly")
            if position_side not in ("LONG", "SHORT"):
                raise BinanceError(400, -4061, "Order's position side does not match user's setting.")
        elif position_side != "BOTH":
            raise BinanceError(400, -4061, "Order's position side does not match user's setting.")
        return position_side

    def _free_client_id(self, params: Mapping[str, str], order_id: int) -> str:
        """The order's client id, refused while an open order holds it (Binance's uniqueness rule)."""
        client_id = _client_id(params, f"emu{order_id}")
        if client_id in self._book.open_client_ids:
            raise BinanceError(400, -4116, "ClientOrderId is duplicated.")
        return client_id

    def _remember(self, order: dict[str, Any]) -> None:
        """File an accepted order; the newest order carrying a client id is the one a lookup finds."""
        self._book.orders[order["orderId"]] = order
        self._book.order_by_client_id[order["clientOrderId"]] = order["orderId"]
        if order["status"] == "NEW":
            self._book.open_client_ids.add(order["clientOrderId"])
        if len(self._book.orders) > HISTORY_LIMIT:
            oldest = self._book.orders.pop(next(iter(self._book.orders)))
            if self._book.order_by_client_id.get(oldest["clientOrderId"]) == oldest["orderId"]:
                del self._book.order_by_client_id[oldest["clientOrderId"]]
                self._book.open_client_ids.discard(oldest["clientOrderId"])

    def _new_market_order(self, spec: MarketSpec, side: str, params: Mapping[str, str]) -> dict[str, Any]:
        for name in ("closePosition", "stopPrice", "price"):
            if name in params:
                raise _not_required(name)
        position_side = self._position_side(params)
        reduce_only = _bool_param(params, "reduceOnly")
        quantity = _decimal_param(params, "quantity")
        _check_quantity(spec, quantity)
        if self._book.faults.price_protect_next > 0:
            self._book.faults.price_protect_next -= 1
            raise BinanceError(
                400, -4131, "The counterparty's best price does not meet the PERCENT_PRICE filter limit."
            )
        order_id = next(self._order_ids)
        # A MARKET order fills at once, so it never holds its client id among the open orders: the same id
        # is accepted again (Binance's rule), and only a lookup tells a retried plan it already ran.
        client_id = self._free_client_id(params, order_id)
        position = self._book.positions.get(spec.symbol, _ZERO)
        signed_qty = quantity if side == "BUY" else -quantity
        if reduce_only and (
            position == _ZERO or (position > _ZERO) == (signed_qty > _ZERO) or quantity > abs(position)
        ):
            raise BinanceError(400, -2022, "ReduceOnly Order is rejected.")
        # A thin book fills part of the order; the rest expires (price protection, liquidity).
        filled = _round_down(quantity * Decimal(str(self._book.faults.fill_ratio)), spec.step_size)
        self._apply_fill(spec, filled if side == "BUY" else -filled)
        mark = self._book.marks[spec.symbol]
        filled_text = _fmt(filled, spec.quantity_precision)
        stamp = now_ms()
        return {
            "orderId": order_id,
            "symbol": spec.symbol,
            "status": "FILLED" if filled == quantity else "EXPIRED",
            "clientOrderId": client_id,
            "price": "0",
            "avgPrice": _fmt(mark if filled else _ZERO, spec.price_precision),
            "origQty": _fmt(quantity, spec.quantity_precision),
            "executedQty": filled_text,
            "cumQty": filled_text,
            "cumQuote": _fmt(filled * mark, 8),
            "timeInForce": "GTC",
            "type": "MARKET",
            "reduceOnly": reduce_only,
            "closePosition": False,
            "side": side,
            "positionSide": position_side,
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": "MARKET",
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": stamp,
            "updateTime": stamp,
        }

    def _new_algo_order(self, params: Mapping[str, str]) -> dict[str, Any]:
        if params.get("algoType") != "CONDITIONAL":
            raise _mandatory("algoType")
        spec = _market(params)
        side = _side(params)
        order_type = params.get("type")
        if not order_type:
            raise _mandatory("type")
        if order_type not in _ALGO_TYPES:
            raise BinanceError(400, -1116, "Invalid orderType.")
        if "price" in params:
            raise _not_required("price")
        position_side = self._position_side(params)
        close_position = _bool_param(params, "closePosition")
        reduce_only = _bool_param(params, "reduceOnly")
        quantity = _ZERO
        if close_position:
            for name in ("quantity", "reduceOnly"):
                if name in params:
                    raise _not_required(name)
        else:
            quantity = _decimal_param(params, "quantity")
            _check_quantity(spec, quantity)
        trigger = _decimal_param(params, "triggerPrice")
        _check_price(spec, trigger)
        mark = self._book.marks[spec.symbol]
        falling = (order_type == "STOP_MARKET") == (side == "SELL")
        if (falling and trigger >= mark) or (not falling and trigger <= mark):
            raise BinanceError(400, -2021, "Order would immediately trigger.")
        if close_position and any(
            other["symbol"] == spec.symbol
            and other["side"] == side
            and other["orderType"] == order_type
            and other["closePosition"]
            and other["algoStatus"] == "NEW"
            for other in self._book.algo_orders.values()
        ):
            raise BinanceError(
                400,
                -4130,
                "An open stop or take profit order with GTE and closePosition in the direction is existing.",
            )
        algo_id = next(self._order_ids)
        client_id = params.get("clientAlgoId") or f"emualgo{algo_id}"
        if not CLIENT_ORDER_ID_PATTERN.match(client_id):
            raise BinanceError(
                400,
                -1100,
                "Illegal characters found in parameter 'clientAlgoId'; "
                "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        held = self._book.algo_by_client_id.get(client_id)
        if held is not None and self._book.algo_orders[held]["algoStatus"] == "NEW":
            raise BinanceError(400, -4116, "ClientOrderId is duplicated.")
        stamp = now_ms()
        order: dict[str, Any] = {
            "algoId": algo_id,
            "clientAlgoId": client_id,
            "algoType": "CONDITIONAL",
            "orderType": order_type,
            "symbol": spec.symbol,
            "side": side,
            "positionSide": position_side,
            # Binance answers a closePosition stop as good till its position closes.
            "timeInForce": "GTE_GTC" if close_position else "GTC",
            "quantity": _fmt(quantity, spec.quantity_precision),
            "algoStatus": "NEW",
            "triggerPrice": _fmt(trigger, spec.price_precision),
            "price": _fmt(_ZERO, spec.price_precision),
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": params.get("workingType", "CONTRACT_PRICE"),
            "priceMatch": "NONE",
            "closePosition": close_position,
            "priceProtect": _bool_param(params, "priceProtect"),
            "reduceOnly": close_position or reduce_only,
            "activatePrice": "",
            "callbackRate": "",
            "createTime": stamp,
            "updateTime": stamp,
            "triggerTime": 0,
            "goodTillDate": 0,
        }
        self._book.algo_orders[algo_id] = order
        self._book.algo_by_client_id[client_id] = algo_id
        return order

    def _find_algo(self, params: Mapping[str, str]) -> dict[str, Any] | None:
        if params.get("algoId"):
            try:
                return self._book.algo_orders.get(int(params["algoId"]))
            except ValueError:
                raise _mandatory("algoId") from None
        if params.get("clientAlgoId"):
            algo_id = self._book.algo_by_client_id.get(params["clientAlgoId"])
            return self._book.algo_orders.get(algo_id) if algo_id is not None else None
        raise BinanceError(
            400, -1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!"
        )

    def _apply_fill(self, spec: MarketSpec, signed_qty: Decimal) -> None:
        before = self._book.positions.get(spec.symbol, _ZERO)
        after = before + signed_qty
        self._book.positions[spec.symbol] = after
        # A position opened or grown from flat takes the mark as its entry; a reduction keeps it.
        if before == _ZERO or (after != _ZERO and (after > _ZERO) != (before > _ZERO)):
            self._book.entry_prices[spec.symbol] = self._book.marks[spec.symbol]

    def _log(
        self,
        params: Mapping[str, str],
        received: float,
        status: str,
        code: int | None,
        order_id: int | None,
    ) -> None:
        self._book.log.append(
            OrderLogEntry(
                client_order_id=params.get("newClientOrderId") or params.get("clientAlgoId"),
                order_id=order_id,
                symbol=params.get("symbol"),
                side=params.get("side"),
                type=params.get("type"),
                quantity=_loose_float(params.get("quantity")),
                stop_price=_loose_float(params.get("triggerPrice") or params.get("stopPrice")),
                reduce_only=params.get("reduceOnly", "").lower() == "true",
                close_position=params.get("closePosition", "").lower() == "true",
                status=status,
                code=code,
                received_monotonic=received,
            )
        )

    def _rows(self, spec: MarketSpec) -> list[tuple[str, Decimal]]:
        """One-way: one BOTH row. Hedge mode: a LONG and a SHORT row (a short's amount is negative)."""
        amount = self._book.positions.get(spec.symbol, _ZERO)
        if not self._book.faults.hedge_mode:
            return [("BOTH", amount)]
        return [("LONG", max(amount, _ZERO)), ("SHORT", min(amount, _ZERO))]

    def _position_common(self, spec: MarketSpec, side: str, amount: Decimal) -> dict[str, Any]:
        mark = self._book.marks[spec.symbol]
        entry = self._book.entry_prices.get(spec.symbol, _ZERO) if amount else _ZERO
        return {
            "symbol": spec.symbol,
            "positionSide": side,
            "positionAmt": _fmt(amount, spec.quantity_precision),
            "entryPrice": _fmt(entry, spec.price_precision),
            "breakEvenPrice": _fmt(entry, spec.price_precision),
            "markPrice": _fmt(mark, 8),
            "unRealizedProfit": _fmt((mark - entry) * amount, 8),
            "liquidationPrice": "0",
            "isolatedMargin": "0.00000000",
            "notional": _fmt(mark * amount, 8),
            "isolatedWallet": "0",
            "updateTime": now_ms(),
        }

    def _position_v2(self, spec: MarketSpec, side: str, amount: Decimal) -> dict[str, Any]:
        entry = self._position_common(spec, side, amount)
        entry.update(
            {
                "leverage": "20",
                "maxNotionalValue": "25000000",
                "marginType": "cross",
                "isAutoAddMargin": "false",
            }
        )
        return entry

    def _position_v3(self, spec: MarketSpec, side: str, amount: Decimal) -> dict[str, Any]:
        entry = self._position_common(spec, side, amount)
        notional = abs(Decimal(entry["notional"]))
        entry.update(
            {
                "marginAsset": "USDT",
                "initialMargin": _fmt(notional / 20, 8),
                "maintMargin": _fmt(notional * Decimal("0.004"), 8),
                "positionInitialMargin": _fmt(notional / 20, 8),
                "openOrderInitialMargin": "0",
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
            }
        )
        return entry

    @staticmethod
    def _parse_symbol_numbers(values: Mapping[str, Any], *, positive_only: bool) -> dict[str, Decimal]:
        parsed: dict[str, Decimal] = {}
        for symbol, value in values.items():
            if symbol not in MARKETS:
                raise ValueError(f"unknown symbol {symbol!r}; known: {sorted(MARKETS)}")
            if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
                raise ValueError(f"{symbol}: expected a number, got {value!r}")
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"{symbol}: expected a number, got {value!r}") from None
            if not number.is_finite() or (positive_only and number <= 0):
                raise ValueError(f"{symbol}: {value!r} is out of range")
            parsed[symbol] = number
        return parsed
