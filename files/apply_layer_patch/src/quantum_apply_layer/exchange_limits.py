"""Binance's limits, kept by every process sharing the account: one table of what each call costs, and a
limiter counted in Redis (`exchange_limits.lua`), fed by the `X-MBX-*` headers the exchange returns.

The limits are read from exchangeInfo's `rateLimits` at start (Binance USD-M: request weight 2,400 a
minute per IP, orders 300 per 10 s and 1,200 a minute per account). Routine traffic (plans) may use
80 % of each; the rest is headroom only emergency closes may use (up to 95 %), so an operator can still
close a position when plans have used their share. A 429 or 418 blocks every process until its
`Retry-After` has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .scripts import lua_source

WEIGHT_KEY = "quantum:apply:exchange:weight_1m"
ORDERS_10S_KEY = "quantum:apply:exchange:orders_10s"
ORDERS_1M_KEY = "quantum:apply:exchange:orders_1m"
BLOCKED_UNTIL_KEY = "quantum:apply:exchange:blocked_until_ms"
# The budget's keys in exchange_budget.lua's order, for the limiter and for claim.lua alike.
BUDGET_KEYS = (WEIGHT_KEY, ORDERS_10S_KEY, ORDERS_1M_KEY, BLOCKED_UNTIL_KEY)


@dataclass(frozen=True)
class Cost:
    weight: int
    orders: int = 0


# The calls the adapter makes, by the endpoint name it reports in metrics (Binance's documented costs).
ENDPOINT_COSTS: dict[str, Cost] = {
    "ping": Cost(1),  # GET /fapi/v1/ping
    "time": Cost(1),  # GET /fapi/v1/time
    "exchange_info": Cost(1),  # GET /fapi/v1/exchangeInfo
    "position_mode": Cost(30),  # GET /fapi/v1/positionSide/dual
    "position_risk": Cost(5),  # GET /fapi/v3/positionRisk
    "order_query": Cost(1),  # GET /fapi/v1/order
    "order_new": Cost(0, orders=1),  # POST /fapi/v1/order
    "algo_new": Cost(0, orders=1),  # POST /fapi/v1/algoOrder
    "algo_query": Cost(1),  # GET /fapi/v1/algoOrder
    "algo_cancel": Cost(1),  # DELETE /fapi/v1/algoOrder
    "algo_open": Cost(1),  # GET /fapi/v1/openAlgoOrders with a symbol
    "listen_key": Cost(1),  # POST /fapi/v1/listenKey (open), PUT (keep alive): the user data stream
    "order_socket": Cost(5),  # connecting to the websocket API (its order.place: orders, as order_new)
}


@dataclass(frozen=True)
class Budget:
    weight_per_minute: int
    orders_per_10s: int
    orders_per_minute: int


BINANCE_LIMITS = Budget(2400, 300, 1200)
ROUTINE_SHARE = 0.80
EMERGENCY_SHARE = 0.95  # never 100 %: the exchange's window and ours are not aligned to the millisecond


def share(limits: Budget, fraction: float) -> Budget:
    return Budget(
        math.floor(limits.weight_per_minute * fraction),
        math.floor(limits.orders_per_10s * fraction),
        math.floor(limits.orders_per_minute * fraction),
    )


def limits_from_exchange_info(info: Mapping[str, Any]) -> Budget:
    """The account's limits as exchangeInfo's `rateLimits` states them; Binance's documented ones for any
    it leaves out."""
    stated: dict[tuple[str, str, int], int] = {}
    for entry in info.get("rateLimits") or []:
        try:
            key = (str(entry["rateLimitType"]), str(entry["interval"]), int(entry["intervalNum"]))
            stated[key] = int(entry["limit"])
        except (KeyError, TypeError, ValueError):
            continue
    return Budget(
        stated.get(("REQUEST_WEIGHT", "MINUTE", 1), BINANCE_LIMITS.weight_per_minute),
        stated.get(("ORDERS", "SECOND", 10), BINANCE_LIMITS.orders_per_10s),
        stated.get(("ORDERS", "MINUTE", 1), BINANCE_LIMITS.orders_per_minute),
    )


@dataclass(frozen=True)
class HeldBack:
    """A request not sent: which limit, and how long until it may be."""

    limit: str  # weight, orders_10s, orders_1m, blocked (a 429's or 418's Retry-After), limiter
    wait_s: float
    detail: str = ""


class SharedLimiter:
    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(lua_source("exchange_budget.lua", "exchange_limits.lua"))
        self._keys = list(BUDGET_KEYS)

    async def reserve(self, endpoint: str, budget: Budget) -> HeldBack | None:
        """Count the call before it is made; a HeldBack when it must not be made now. Without Redis the
        budget cannot be known: the RedisError goes up, so nothing is sent (fail closed) and the plan in
        hand stays pending, as for any Redis failure, instead of being recorded as held back."""
        cost = ENDPOINT_COSTS[endpoint]
        args: list[str | int] = [
            "reserve",
            cost.weight,
            cost.orders,
            budget.weight_per_minute,
            budget.orders_per_10s,
            budget.orders_per_minute,
        ]
        ok, limit, wait_ms = await self._script(keys=self._keys, args=args)
        if int(ok) == 1:
            return None
        name = limit.decode() if isinstance(limit, bytes) else str(limit)
        return HeldBack(name, int(wait_ms) / 1000)

    async def observe(self, used_weight: int, orders_10s: int, orders_1m: int) -> None:
        """What the exchange says it counted (-1 for a header it did not send): ours never lags behind,
        whatever else shares the IP."""
        try:
            await self._script(keys=self._keys, args=["observe", used_weight, orders_10s, orders_1m])
        except (RedisError, OSError):
            return  # the next reserve fails closed if Redis is really gone

    async def block(self, seconds: float) -> None:
        """Nothing may be sent by any process for that long (a 429's or a 418's Retry-After)."""
        try:
            await self._script(keys=self._keys, args=["block", max(1, round(seconds * 1000))])
        except (RedisError, OSError):
            return  # this process still honours it locally
