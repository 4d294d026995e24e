"""The trade plan as upstream writes it, and its validation.

Every failure names the dead-letter reason it becomes (`PlanError.reason`), so a malformed plan is
dead-lettered with a reason an operator can act on, never dropped and never half-executed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar


class Action(StrEnum):
    FULL_CLOSE_PROPOSED = "FULL_CLOSE_PROPOSED"
    PARTIAL_75 = "PARTIAL_75"
    PARTIAL_50 = "PARTIAL_50"
    UPDATE_SL = "UPDATE_SL"
    HOLD = "HOLD"


class Decision(StrEnum):
    EXECUTE = "EXECUTE"
    SKIP = "SKIP"
    BLOCKED = "BLOCKED"


class StepKind(StrEnum):
    CLOSE_FULL = "CLOSE_FULL"
    CLOSE_PARTIAL_75 = "CLOSE_PARTIAL_75"
    CLOSE_PARTIAL_50 = "CLOSE_PARTIAL_50"
    UPDATE_SL = "UPDATE_SL"


class OrderType(StrEnum):
    MARKET_REDUCE_ONLY = "market_reduce_only"
    STOP_LOSS_ORDER = "stop_loss_order"


# The share of the position a close step takes when the step gives no `pct` of its own.
DEFAULT_CLOSE_PCT = {
    StepKind.CLOSE_FULL: 100.0,
    StepKind.CLOSE_PARTIAL_75: 75.0,
    StepKind.CLOSE_PARTIAL_50: 50.0,
}
# The close step each action may take (a stop-loss update may go with any close): a PARTIAL_50 plan
# closes 50%, never 100%. HOLD takes no step at all.
ACTION_CLOSE_STEP = {
    Action.FULL_CLOSE_PROPOSED: StepKind.CLOSE_FULL,
    Action.PARTIAL_75: StepKind.CLOSE_PARTIAL_75,
    Action.PARTIAL_50: StepKind.CLOSE_PARTIAL_50,
}
REQUIRED_FIELDS = ("plan_id", "symbol", "action", "decision")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}$")
MAX_PLAN_ID_LENGTH = 200
MAX_STEPS = 10
# A list of flat objects is two levels deep; anything deeper is malformed, and is refused before
# json.loads, whose recursion a deeply nested value would exhaust.
MAX_STEPS_DEPTH = 3
E = TypeVar("E", bound=StrEnum)


class PlanError(Exception):
    """Why a plan cannot be understood. `reason` is the short code; str() is code + detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Step:
    kind: StepKind
    order_type: OrderType
    pct: float | None
    price: float | None

    @property
    def reduces_position(self) -> bool:
        """Only a reduce-only market close shrinks a position now; a stop order may never fill."""
        return self.order_type is OrderType.MARKET_REDUCE_ONLY


@dataclass(frozen=True)
class Plan:
    plan_id: str
    symbol: str
    action: Action
    decision: Decision
    steps: tuple[Step, ...]
    reason_codes: tuple[str, ...]
    kill_score: float | None
    close_qty: float | None
    price: float | None
    timestamp: float | None
    # An operator's close while halted (`quantum-apply-layer emergency-close`): the side that closes
    # the position the operator saw. It runs only with the CLI's one-time token (claim.lua).
    emergency_side: str | None = None

    @property
    def emergency(self) -> bool:
        return self.emergency_side is not None

    @property
    def wants_execution(self) -> bool:
        return self.decision is Decision.EXECUTE and self.action is not Action.HOLD

    @property
    def only_reduces(self) -> bool:
        return all(step.reduces_position for step in self.steps)


def parse_plan(fields: Mapping[str, str]) -> Plan:
    for name in REQUIRED_FIELDS:
        if not fields.get(name, "").strip():
            raise PlanError("missing_field", f"field {name!r} is missing or empty")
    plan_id = fields["plan_id"].strip()
    if len(plan_id) > MAX_PLAN_ID_LENGTH or not plan_id.isprintable():
        raise PlanError("bad_plan_id", f"plan_id must be 1 to {MAX_PLAN_ID_LENGTH} printable characters")
    symbol = fields["symbol"].strip()
    if not SYMBOL_PATTERN.match(symbol):
        raise PlanError("bad_symbol", f"symbol {symbol!r} is not an exchange symbol such as BTCUSDT")
    action = _enum(Action, fields["action"], "unknown_action")
    decision = _enum(Decision, fields["decision"], "unknown_decision")
    steps = _parse_steps(fields.get("steps", "[]"))
    plan = Plan(
        plan_id=plan_id,
        symbol=symbol,
        action=action,
        decision=decision,
        steps=steps,
        reason_codes=tuple(
            code.strip() for code in fields.get("reason_codes", "").split(",") if code.strip()
        ),
        kill_score=_number(fields, "kill_score", low=0.0, high=1.0),
        close_qty=_number(fields, "close_qty", low=0.0),
        price=_number(fields, "price", low=0.0),
        timestamp=_number(fields, "timestamp", low=0.0),
    )
    if plan.wants_execution and not plan.steps:
        raise PlanError("no_steps", f"decision EXECUTE with action {action} but no steps")
    _check_action_matches_steps(action, steps)
    emergency = fields.get("emergency", "").strip().lower()
    if emergency not in {"", "false", "true"}:
        raise PlanError("bad_emergency", f"emergency={emergency!r}: accepted: true, false")
    if emergency == "true":
        side = fields.get("emergency_side", "").strip().upper()
        if side not in {"BUY", "SELL", "ANY"}:
            raise PlanError("bad_emergency", "an emergency close needs emergency_side BUY, SELL or ANY")
        if not plan.only_reduces:
            raise PlanError("bad_emergency", "an emergency close may only have reduce-only close steps")
        plan = replace(plan, emergency_side=side)
    return plan


def _check_action_matches_steps(action: Action, steps: tuple[Step, ...]) -> None:
    closes = [step for step in steps if step.order_type is OrderType.MARKET_REDUCE_ONLY]
    if action is Action.HOLD and steps:
        raise PlanError("action_steps_mismatch", f"action HOLD takes no steps, got {len(steps)}")
    if action is Action.UPDATE_SL and closes:
        raise PlanError("action_steps_mismatch", f"action UPDATE_SL cannot close: got {closes[0].kind}")
    wanted = ACTION_CLOSE_STEP.get(action)
    if wanted is None:
        return
    if len(closes) > 1:
        raise PlanError("action_steps_mismatch", f"action {action} takes one close step, got {len(closes)}")
    for step in closes:
        if step.kind is not wanted:
            raise PlanError("action_steps_mismatch", f"action {action} closes with {wanted}, not {step.kind}")
        if step.pct != DEFAULT_CLOSE_PCT[wanted]:
            raise PlanError(
                "action_steps_mismatch",
                f"action {action} closes {DEFAULT_CLOSE_PCT[wanted]:g}%, its step asks {step.pct:g}%",
            )


def _json_depth_exceeds(raw: str, limit: int) -> bool:
    """True as soon as brackets outside strings nest deeper than limit (a linear scan, no recursion)."""
    depth = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_steps(raw: str) -> tuple[Step, ...]:
    if _json_depth_exceeds(raw, MAX_STEPS_DEPTH):
        raise PlanError("steps_too_deep", f"steps nest deeper than {MAX_STEPS_DEPTH} levels")
    try:
        decoded = json.loads(raw) if raw.strip() else []
    except json.JSONDecodeError as error:
        raise PlanError("steps_not_json", f"steps is not JSON: {error.msg}") from None
    if not isinstance(decoded, list):
        raise PlanError("steps_not_list", f"steps must be a JSON list, got {type(decoded).__name__}")
    if len(decoded) > MAX_STEPS:
        raise PlanError("too_many_steps", f"{len(decoded)} steps, at most {MAX_STEPS}")
    return tuple(_parse_step(index, item) for index, item in enumerate(decoded))


def _parse_step(index: int, item: object) -> Step:
    if not isinstance(item, dict):
        raise PlanError("bad_step", f"step {index} is not an object")
    kind = _enum(StepKind, str(item.get("step", "")), "unknown_step")
    order_type = _enum(OrderType, str(item.get("type", "")), "unknown_step_type", upper=False)
    closes = kind is not StepKind.UPDATE_SL
    if closes != (order_type is OrderType.MARKET_REDUCE_ONLY):
        raise PlanError("step_type_mismatch", f"step {index}: {kind} cannot be a {order_type}")
    if closes:
        pct = _step_number(item, "pct", index, DEFAULT_CLOSE_PCT[kind])
        if pct is None or not 0 < pct <= 100:
            raise PlanError("bad_step_param", f"step {index}: pct must be in (0, 100]")
        return Step(kind, order_type, pct, None)
    price = _step_number(item, "price", index, None)
    if price is None or price <= 0:
        raise PlanError("bad_step_param", f"step {index}: a stop-loss step needs a price > 0")
    return Step(kind, order_type, None, price)


def _step_number(item: dict[str, object], name: str, index: int, default: float | None) -> float | None:
    value = item.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlanError("bad_step_param", f"step {index}: {name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise PlanError("bad_step_param", f"step {index}: {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise PlanError("bad_step_param", f"step {index}: {name} must be finite")
    return number


def _number(fields: Mapping[str, str], name: str, low: float, high: float = math.inf) -> float | None:
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise PlanError("bad_number", f"{name}={raw!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise PlanError("bad_number", f"{name}={raw!r} is outside [{low}, {high}]")
    return value


def _enum(kind: type[E], raw: str, reason: str, upper: bool = True) -> E:
    value = raw.strip().upper() if upper else raw.strip()
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(member.value for member in kind)
        raise PlanError(reason, f"{raw!r} is not one of {accepted}") from None
