"""claim.lua's contract, in one place: the KEYS and ARGV it reads, in its order, and its answer.

KEYS: 1 global switch, 2 symbol switch, 3 dedupe mark, 4 governor permit, 5 P3.3 permit,
      6 global rate counter, 7 symbol rate counter, 8 emergency token,
      9 exchange weight counter, 10 exchange orders-per-10s counter,
      11 exchange orders-per-minute counter, 12 exchange blocked-until (ms)
ARGV: 1 owner (the plan's stream entry id), 2 permits required (1|0), 3 plan only reduces (1|0),
      4 dedupe mark TTL in seconds, 5 consumer name, 6 orders in the plan,
      7 global orders/s limit (0 = none), 8 symbol orders/s limit (0 = none), 9 emergency (1|0),
      10 exchange weight of the orders, 11 exchange weight budget a minute,
      12 exchange orders budget per 10s, 13 exchange orders budget a minute

claim.lua's header says the same; tests/test_claim.py fails when the two drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import keys
from .config import Settings
from .decoding import text
from .exchange_limits import BUDGET_KEYS, ENDPOINT_COSTS, Budget
from .plan import OrderType, Plan

CLAIM_KEYS = (
    "global switch",
    "symbol switch",
    "dedupe mark",
    "governor permit",
    "P3.3 permit",
    "global rate counter",
    "symbol rate counter",
    "emergency token",
    "exchange weight counter",
    "exchange orders-per-10s counter",
    "exchange orders-per-minute counter",
    "exchange blocked-until (ms)",
)
CLAIM_ARGV = (
    "owner (the plan's stream entry id)",
    "permits required (1|0)",
    "plan only reduces (1|0)",
    "dedupe mark TTL in seconds",
    "consumer name",
    "orders in the plan",
    "global orders/s limit (0 = none)",
    "symbol orders/s limit (0 = none)",
    "emergency (1|0)",
    "exchange weight of the orders",
    "exchange weight budget a minute",
    "exchange orders budget per 10s",
    "exchange orders budget a minute",
)


def claim_keys(plan_id: str, symbol: str) -> list[str]:
    """The KEYS of claim.lua, in CLAIM_KEYS's order."""
    return [
        keys.GLOBAL_SWITCH,
        keys.symbol_switch(symbol),
        keys.dedupe_mark(plan_id),
        keys.governor_permit(plan_id),
        keys.p33_permit(plan_id),
        keys.rate_counter("global"),
        keys.rate_counter(symbol),
        keys.emergency_token(plan_id),
        *BUDGET_KEYS,
    ]


def claim_args(plan: Plan, entry_id: str, settings: Settings, budget: Budget) -> list[str | int]:
    """The ARGV of claim.lua, in CLAIM_ARGV's order; `budget` is the exchange's share the plan may use
    (routine, or an emergency close's headroom)."""
    return [
        entry_id,
        _flag(not settings.testnet),
        _flag(plan.only_reduces),
        settings.dedupe_ttl_s,
        settings.consumer_name,
        len(plan.steps),
        settings.max_orders_per_s,
        settings.max_orders_per_s_per_symbol,
        _flag(plan.emergency),
        sum(ENDPOINT_COSTS[order_endpoint(step.order_type)].weight for step in plan.steps),
        budget.weight_per_minute,
        budget.orders_per_10s,
        budget.orders_per_minute,
    ]


def order_endpoint(order_type: OrderType) -> str:
    """Where a step's order goes: a stop on the algo order API, a close on the order API."""
    return "algo_new" if order_type is OrderType.STOP_LOSS_ORDER else "order_new"


@dataclass(frozen=True)
class ClaimResult:
    """claim.lua's answer: claimed, resume, halted, reduce_only, duplicate, rate_limited, permit_missing,
    denied (`which:reason`) or held_back (`limit:ms to wait`, by the exchange's budget)."""

    kind: str
    detail: str
    mark: dict[str, object]  # the dedupe mark of a claimed (or resumed) plan
    governor_permit: dict[str, object]
    p33_permit: dict[str, object]

    @property
    def may_send(self) -> bool:
        return self.kind in {"claimed", "resume"}

    @classmethod
    def from_script(cls, reply: list[bytes | str]) -> ClaimResult:
        values = [text(item) for item in reply]
        kind, detail = values[0], values[1] if len(values) > 1 else ""
        if kind in {"denied", "held_back"}:
            detail = f"{values[1]}:{values[2]}"
        if kind not in {"claimed", "resume"}:
            return cls(kind, detail, {}, {}, {})
        mark = _json_object(detail)  # the dedupe mark, which keeps the permits the claim consumed
        governor = _json_object(str(mark.get("governor", "")))
        return cls(kind, detail, mark, governor, _json_object(str(mark.get("p33", ""))))


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _json_object(raw: str) -> dict[str, object]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
