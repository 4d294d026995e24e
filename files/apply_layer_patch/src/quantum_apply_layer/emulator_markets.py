"""The emulator's market table: five USD-M perpetuals described the way Binance's exchangeInfo does.

Filters and precisions mirror the live contracts closely enough that ccxt derives the same precision
for them as it does against Binance, so rounding bugs show up here rather than in production.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class MarketSpec:
    symbol: str
    base_asset: str
    price_precision: int
    quantity_precision: int
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_price: Decimal
    max_price: Decimal
    min_notional: Decimal
    default_mark_price: Decimal
    onboard_date_ms: int


def _spec(
    symbol: str,
    base: str,
    price_precision: int,
    quantity_precision: int,
    tick: str,
    step: str,
    min_qty: str,
    max_qty: str,
    market_max_qty: str,
    min_price: str,
    max_price: str,
    min_notional: str,
    mark: str,
    onboard_date_ms: int,
) -> MarketSpec:
    return MarketSpec(
        symbol,
        base,
        price_precision,
        quantity_precision,
        Decimal(tick),
        Decimal(step),
        Decimal(min_qty),
        Decimal(max_qty),
        Decimal(market_max_qty),
        Decimal(min_price),
        Decimal(max_price),
        Decimal(min_notional),
        Decimal(mark),
        onboard_date_ms,
    )


# fmt: off
MARKETS: dict[str, MarketSpec] = {spec.symbol: spec for spec in (
    #     symbol     base   price qty  tick      step     min_qty  max_qty     market_max
    #     min_price  max_price  min_notional  default_mark  onboard_date_ms
    _spec("BTCUSDT", "BTC", 2,    3,   "0.10",   "0.001", "0.001", "1000",     "120",
          "261.10",  "809484",  "100",        "65000.00",   1569398400000),
    _spec("ETHUSDT", "ETH", 2,    3,   "0.01",   "0.001", "0.001", "10000",    "2000",
          "39.86",   "306177",  "20",         "3200.00",    1569398400000),
    _spec("SOLUSDT", "SOL", 4,    0,   "0.0100", "1",     "1",     "1000000",  "5000",
          "0.4200",  "6857",    "5",          "150.0000",   1631664000000),
    _spec("BNBUSDT", "BNB", 3,    2,   "0.010",  "0.01",  "0.01",  "100000",   "2000",
          "6.600",   "100000",  "5",          "580.000",    1581292800000),
    _spec("XRPUSDT", "XRP", 4,    1,   "0.0001", "0.1",   "0.1",   "10000000", "2000000",
          "0.0143",  "100000",  "5",          "0.5500",     1578355200000),
)}
# fmt: on

_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]


def _symbol_info(spec: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "pair": spec.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": spec.onboard_date_ms,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base_asset,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": spec.price_precision,
        "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": str(spec.min_price),
                "maxPrice": str(spec.max_price),
                "tickSize": str(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": str(spec.min_qty),
                "maxQty": str(spec.max_qty),
                "stepSize": str(spec.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": str(spec.min_qty),
                "maxQty": str(spec.market_max_qty),
                "stepSize": str(spec.step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": str(spec.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": _ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSet": ["GRID", "COPY"],
    }


def exchange_info(
    server_time_ms: int, weight_per_minute: int, orders_per_minute: int, orders_per_10s: int
) -> dict[str, Any]:
    """The body of GET /fapi/v1/exchangeInfo, stating the limits the emulator enforces."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": orders_per_minute},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": orders_per_10s},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_symbol_info(spec) for spec in MARKETS.values()],
    }


def leverage_brackets(spec: MarketSpec) -> dict[str, Any]:
    """One entry of GET /fapi/v1/leverageBracket (the first tiers of Binance's schedule)."""
    tiers = [
        (125, 0, 50_000, "0.004", "0.0"),
        (100, 50_000, 600_000, "0.005", "50.0"),
        (75, 600_000, 3_000_000, "0.0065", "950.0"),
        (50, 3_000_000, 12_000_000, "0.01", "11450.0"),
    ]
    return {
        "symbol": spec.symbol,
        "notionalCoef": 1.0,
        "brackets": [
            {
                "bracket": index + 1,
                "initialLeverage": leverage,
                "notionalCap": cap,
                "notionalFloor": floor,
                "maintMarginRatio": float(ratio),
                "cum": float(cum),
            }
            for index, (leverage, floor, cap, ratio, cum) in enumerate(tiers)
        ],
    }
