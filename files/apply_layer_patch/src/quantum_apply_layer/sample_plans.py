"""Plans and permits as upstream writes them, and the catalogue of malformed plans: one place for the
unit tests, the molecule probes (run with a release's python) and the smoke role.

Each MALFORMED case is (the dead-letter reason plan.py gives, what changes in a good plan); a None
value removes the field.
"""

from __future__ import annotations

import json
import time

from . import keys

CLOSE_FULL = json.dumps([{"step": "CLOSE_FULL", "type": "market_reduce_only", "pct": 100}])

MALFORMED: tuple[tuple[str, dict[str, str | None]], ...] = (
    ("missing_field", {"plan_id": None}),
    ("missing_field", {"plan_id": ""}),
    ("missing_field", {"symbol": " "}),
    ("missing_field", {"symbol": "   "}),
    ("missing_field", {"action": None}),
    ("missing_field", {"decision": None}),
    ("bad_plan_id", {"plan_id": "x" * 201}),
    ("bad_symbol", {"symbol": "btc/usdt"}),
    ("unknown_action", {"action": "SELL_ALL"}),
    ("unknown_decision", {"decision": "MAYBE"}),
    ("steps_not_json", {"steps": "not json"}),
    ("steps_not_json", {"steps": '[{"step": "CLOSE_FULL"'}),
    ("steps_not_list", {"steps": '{"step": "CLOSE_FULL"}'}),
    ("steps_not_list", {"steps": '{"step": "CLOSE_FULL", "type": "market_reduce_only"}'}),
    (
        "too_many_steps",
        {"steps": json.dumps([{"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only"}] * 11)},
    ),
    ("bad_step", {"steps": "[1]"}),
    ("bad_step", {"steps": '["CLOSE_FULL"]'}),
    ("unknown_step", {"steps": '[{"step": "OPEN_LONG", "type": "market_reduce_only"}]'}),
    ("unknown_step", {"steps": '[{"step": "CLOSE_MOST", "type": "market_reduce_only"}]'}),
    ("unknown_step_type", {"steps": '[{"step": "CLOSE_FULL", "type": "limit"}]'}),
    ("step_type_mismatch", {"steps": '[{"step": "UPDATE_SL", "type": "market_reduce_only"}]'}),
    ("step_type_mismatch", {"steps": '[{"step": "CLOSE_FULL", "type": "stop_loss_order"}]'}),
    ("bad_step_param", {"steps": '[{"step": "CLOSE_FULL", "type": "market_reduce_only", "pct": 150}]'}),
    ("bad_step_param", {"steps": '[{"step": "UPDATE_SL", "type": "stop_loss_order"}]'}),
    ("no_steps", {"steps": "[]"}),
    ("bad_number", {"kill_score": "1.5"}),
    ("bad_number", {"kill_score": "2"}),
    ("bad_number", {"timestamp": "yesterday"}),
    ("bad_emergency", {"emergency": "maybe"}),
)


def minimal_plan(plan_id: str, symbol: str = "BTCUSDT", steps: str = CLOSE_FULL) -> dict[str, str]:
    """Only the fields a plan must have: a full close that never grows stale (no timestamp)."""
    return {
        "plan_id": plan_id,
        "symbol": symbol,
        "action": "FULL_CLOSE_PROPOSED",
        "decision": "EXECUTE",
        "steps": steps,
    }


def plan_fields(
    plan_id: str, symbol: str = "BTCUSDT", steps: str = CLOSE_FULL, **extra: str
) -> dict[str, str]:
    """A full plan, written now, with `extra` fields changed or added."""
    return {
        **minimal_plan(plan_id, symbol, steps),
        "reason_codes": "kill_score_high",
        "kill_score": "0.9",
        "timestamp": f"{time.time():.3f}",
        **extra,
    }


def changed(fields: dict[str, str], change: dict[str, str | None]) -> dict[str, str]:
    """`fields` with a MALFORMED change applied (None removes the field)."""
    merged = {**fields, **change}
    return {name: value for name, value in merged.items() if value is not None}


def permits(
    plan_id: str, safe_close_qty: float = 0.01, position: float | None = 0.5, reason: str = "test"
) -> dict[str, str]:
    """Both permits as the risk governor (P3.2) and the position brain (P3.3) write them: key -> JSON.
    A None position leaves exchange_position_amt out (P3.3 not knowing it: no mismatch is judged)."""
    p33: dict[str, object] = {"allow": True, "safe_close_qty": safe_close_qty}
    if position is not None:
        p33["exchange_position_amt"] = position
    p33["reason"] = reason
    return {
        keys.governor_permit(plan_id): json.dumps({"granted": True}),
        keys.p33_permit(plan_id): json.dumps(p33),
    }
