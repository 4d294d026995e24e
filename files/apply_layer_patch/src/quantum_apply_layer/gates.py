"""What can stop an order: every gate, in the order a plan meets it. Each answers None (pass) or the
Verdict that stops the plan (or the step), and each is a pure function, testable alone.

Before the claim:   decision_gate, freshness_gate; switch_gate only when the position cannot be known
                    (the claim would refuse a halted plan anyway: this names the halt, not the outage)
The claim:          claim_verdict, the answer of claim.lua (claim.py), which checks in one atomic step
                    the global and symbol switches, the dedupe mark, the order-rate limits, the
                    exchange's budget for the orders (counted with the claim) and both permits
                    (consumed together, once), or an operator's emergency token
Before each order:  position_side_gate (P3.3's position against the exchange's), notional_gate
                    (APPLY_MAX_NOTIONAL_USDT), and for an emergency close emergency_gate
Also: the market's filters (market_filters.py) refuse a price or quantity the exchange would refuse,
and the exchange's own limits (exchange_limits.py) hold any other request back rather than earn a 429.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import metrics
from .claim import ClaimResult
from .plan import Plan
from .statuses import ResultStatus
from .switch import SEVERITY, SwitchState

# How far ahead of this host a plan's timestamp may be: clock skew between upstream's host and ours.
MAX_FUTURE_S = 5.0
# Gates of the apply layer's own risk limits, counted in apply_risk_block_total{gate}.
RISK_GATES = frozenset({"stale", "rate_global", "rate_symbol", "notional"})
# An emergency close may name the side to close, or leave it to the position.
ANY_SIDE = "ANY"


@dataclass(frozen=True)
class Verdict:
    status: ResultStatus  # blocked, skipped, halted, reduce_only_blocked, duplicate (or error)
    reason: str
    gate: str


def count_risk_block(verdict: Verdict) -> None:
    """The one place apply_risk_block_total is counted."""
    if verdict.gate in RISK_GATES:
        metrics.apply_risk_block_total.labels(verdict.gate).inc()


def decision_gate(plan: Plan) -> Verdict | None:
    """Upstream decided not to execute, or the plan holds: nothing to send, and nothing to consume."""
    if plan.wants_execution:
        return None
    return Verdict(ResultStatus.SKIPPED, f"decision={plan.decision} action={plan.action}", "decision")


def freshness_gate(plan: Plan, now: float, max_age_s: float) -> Verdict | None:
    """A plan older than max_age_s describes a market that is gone (e.g. after an outage): block it.
    One from further ahead than clock skew explains (a year 2100, or milliseconds read as seconds)
    has a timestamp nobody can trust: block it too, or it would never grow stale."""
    if plan.emergency or plan.timestamp is None:
        return None
    age = now - plan.timestamp
    if age > max_age_s:
        return Verdict(ResultStatus.BLOCKED, f"stale: {age:.0f}s old, limit {max_age_s:.0f}s", "stale")
    if -age > MAX_FUTURE_S:
        return Verdict(
            ResultStatus.BLOCKED,
            f"from_future: timestamp {plan.timestamp:.3f} is {-age:.0f}s ahead of this host's clock "
            f"(limit {MAX_FUTURE_S:.0f}s; epoch seconds expected)",
            "stale",
        )
    return None


def switch_gate(plan: Plan, global_state: SwitchState, symbol_state: SwitchState) -> Verdict | None:
    """The switches as claim.lua reads them, for a plan that cannot reach the claim: while the exchange
    cannot say what the position is, a plan the switch stops is recorded halted, not as an error."""
    if plan.emergency:
        return None  # an operator's emergency close does not wait for the switch
    scope, state = "global", global_state
    if SEVERITY[symbol_state] > SEVERITY[global_state]:
        scope, state = "symbol", symbol_state
    if state in (SwitchState.HALTED, SwitchState.INVALID):
        return Verdict(ResultStatus.HALTED, f"kill switch {scope}:{state}", "switch")
    if state == SwitchState.REDUCE_ONLY and not plan.only_reduces:
        return Verdict(
            ResultStatus.REDUCE_ONLY_BLOCKED,
            f"kill switch {scope}:{state}: plan has a non-reducing step",
            "switch",
        )
    return None


def claim_verdict(claim: ClaimResult) -> Verdict | None:
    """None when the plan may send (claimed, or resumed after a crash)."""
    if claim.may_send:
        return None
    if claim.kind == "halted":
        return Verdict(ResultStatus.HALTED, f"kill switch {claim.detail}", "switch")
    if claim.kind == "reduce_only":
        return Verdict(
            ResultStatus.REDUCE_ONLY_BLOCKED,
            f"kill switch {claim.detail}: plan has a non-reducing step",
            "switch",
        )
    if claim.kind == "duplicate":
        return Verdict(ResultStatus.DUPLICATE, "plan_id already claimed by another entry", "dedupe")
    if claim.kind == "rate_limited":
        scope = claim.detail.partition(":")[0]
        return Verdict(ResultStatus.BLOCKED, f"rate_limited: {claim.detail} orders", f"rate_{scope}")
    if claim.kind == "permit_missing":
        return Verdict(
            ResultStatus.BLOCKED, f"permit_timeout: no {claim.detail} permit before the deadline", "permit"
        )
    if claim.kind == "denied":
        return Verdict(ResultStatus.BLOCKED, f"permit_denied: {claim.detail}", "permit")
    if claim.kind == "held_back":
        limit, _, wait_ms = claim.detail.partition(":")
        wait = f"{int(wait_ms or 0) / 1000:.1f}s"
        why = (
            f"a Retry-After holds every process for {wait}"
            if limit == "blocked"
            else f"the exchange's {limit} budget is used up for {wait}"
        )
        reason = f"held_back: {why}; nothing sent, permits kept"
        return Verdict(ResultStatus.BLOCKED, reason, "exchange_limit")
    return Verdict(ResultStatus.BLOCKED, f"unexpected claim answer {claim.kind!r}", "claim")


def position_side_gate(p33_amt: float | None, exchange_amt: float) -> Verdict | None:
    """P3.3 judged a long, the exchange holds a short (or the reverse): the permit is for another
    position, so no close may be sized from it."""
    if p33_amt is None or p33_amt * exchange_amt >= 0:
        return None
    return Verdict(
        ResultStatus.BLOCKED,
        f"position_mismatch: P3.3 saw {p33_amt}, exchange holds {exchange_amt}",
        "position",
    )


def notional_gate(quantity: float, price: float, limit: float | None) -> Verdict | None:
    """An order larger than APPLY_MAX_NOTIONAL_USDT for its symbol is blocked, never trimmed to fit."""
    if limit is None:
        return None
    if price <= 0:
        return Verdict(
            ResultStatus.BLOCKED, f"notional: no price to check the {limit:g} USDT limit against", "notional"
        )
    notional = quantity * price
    if notional > limit:
        return Verdict(
            ResultStatus.BLOCKED,
            f"notional: {notional:.2f} USDT over the {limit:g} USDT limit per order",
            "notional",
        )
    return None


def emergency_gate(side: str, position_amt: float) -> Verdict | None:
    """An operator's emergency close only reduces an open position, on the side the operator named
    (SELL closes a long, BUY a short, ANY either)."""
    if position_amt == 0:
        return Verdict(ResultStatus.BLOCKED, "emergency: no open position", "emergency")
    closing = "SELL" if position_amt > 0 else "BUY"
    if side != ANY_SIDE and closing != side:
        return Verdict(
            ResultStatus.BLOCKED,
            f"emergency: {side} does not close the position of {position_amt}",
            "emergency",
        )
    return None
