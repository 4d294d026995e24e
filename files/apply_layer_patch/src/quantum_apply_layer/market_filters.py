"""A market's order filters as Binance publishes them in exchangeInfo, and the checks an order must pass.

Checked before the claim (a stop price) or before the send (a close's final quantity), so an order the
exchange would refuse is `blocked` here with the reason, never discovered halfway through a plan.
Decimal arithmetic, as the exchange does it: float modulo would call 0.3 off a 0.1 tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation


class FilterError(ValueError):
    """Why an order would break the market's filters, worded for the result's reason."""


@dataclass(frozen=True)
class MarketFilters:
    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    market_max_qty: Decimal

    @classmethod
    def from_exchange_info(cls, symbol: str, filters: Iterable[Mapping[str, object]]) -> MarketFilters:
        """From one symbol's `filters` list of GET /fapi/v1/exchangeInfo (ccxt keeps it as market['info'])."""
        by_type = {str(item.get("filterType")): item for item in filters}
        try:
            price, lot = by_type["PRICE_FILTER"], by_type["MARKET_LOT_SIZE"]
            return cls(
                symbol,
                Decimal(str(price["tickSize"])),
                Decimal(str(price["minPrice"])),
                Decimal(str(price["maxPrice"])),
                Decimal(str(lot["stepSize"])),
                Decimal(str(lot["minQty"])),
                Decimal(str(lot["maxQty"])),
            )
        except (KeyError, InvalidOperation) as error:
            raise FilterError(f"{symbol}: exchangeInfo has no usable PRICE_FILTER/MARKET_LOT_SIZE") from error

    def stop_price(self, price: float) -> Decimal:
        """The stop price rounded to the tick (as ccxt's price_to_precision does), inside the price limits.
        The upper limit is checked before rounding: 1e308 / a tick has more digits than Decimal keeps."""
        if not math.isfinite(price) or price <= 0:
            raise FilterError(f"market_filter: stop price {price} is not a positive number")
        value = Decimal(repr(price))
        if value > self.max_price:
            raise FilterError(
                f"market_filter: stop price {price} is above {self.symbol}'s max price {self.max_price}"
            )
        rounded = _to_step(value, self.tick_size, ROUND_HALF_UP)
        if rounded < self.min_price:
            raise FilterError(
                f"market_filter: stop price {price} rounds to {rounded}, below {self.symbol}'s "
                f"min price {self.min_price} (tick {self.tick_size})"
            )
        return rounded

    def market_quantity(self, quantity: float) -> Decimal:
        """A market order's quantity cut down to the step (never up: a reduce-only close must not exceed
        the position), at least the minimum and at most the market maximum (checked before cutting)."""
        if not math.isfinite(quantity) or quantity <= 0:
            raise FilterError(f"market_filter: quantity {quantity} is not a positive number")
        value = Decimal(repr(quantity))
        if value >= self.market_max_qty + self.step_size:
            raise FilterError(
                f"market_filter: quantity {quantity} is above {self.symbol}'s market order maximum "
                f"{self.market_max_qty}"
            )
        cut = _to_step(value, self.step_size, ROUND_DOWN)
        self.reaches_min(float(cut))
        return cut

    def reaches_min(self, quantity: float) -> None:
        """Whether a close of at most `quantity` can be sent at all (P3.3's permit can only cut it more)."""
        if Decimal(repr(quantity)) < self.min_qty:
            raise FilterError(
                f"market_filter: quantity {quantity} is below {self.symbol}'s min quantity {self.min_qty} "
                f"(step {self.step_size})"
            )


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    return (value / step).quantize(Decimal(1), rounding=rounding) * step
