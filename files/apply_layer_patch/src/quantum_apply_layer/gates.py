"""One function per gate. Each answers None (pass) or the Verdict that stops the plan.

The switch and permit gates run inside Redis (claim.lua) so that they are atomic with consuming the
permits; `claim_verdict` turns that script's answer into a Verdict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .plan import Plan

# How far ahead of this host a plan's timestamp may be: clock skew between upstream's host and ours.
MAX_FUTURE_S = 5.0


@dataclass(frozen=True)
class Verdict:
    status: str  # the result's status: skipped, blocked, halted, reduce_only_blocked, duplicate
    reason: str
    gate: str


@dataclass(frozen=True)
class ClaimResult:
    """claim.lua's answer: claimed, resume, halted, reduce_only, duplicate, permit_missing or denied."""

    kind: str
    detail: str
    mark: dict[str, object]  # the dedupe mark of a claimed (or resumed) plan
    governor_permit: dict[str, object]
    p33_permit: dict[str, object]

    @classmethod
    def from_script(cls, reply: list[bytes | str]) -> ClaimResult:
        values = [item.decode() if isinstance(item, bytes) else str(item) for item in reply]
        kind, detail = values[0], values[1] if len(values) > 1 else ""
        if kind == "denied":
            detail = f"{values[1]}:{values[2]}"
        if kind not in {"claimed", "resume"}:
            return cls(kind, detail, {}, {}, {})
        mark = _json_object(detail)  # the dedupe mark, which keeps the permits the claim consumed
        governor = _json_object(str(mark.get("governor", "")))
        return cls(kind, detail, mark, governor, _json_object(str(mark.get("p33", ""))))


def decision_gate(plan: Plan) -> Verdict | None:
    """Upstream decided not to execute, or the plan holds: nothing to send, and nothing to consume."""
    if plan.wants_execution:
        return None
    return Verdict("skipped", f"decision={plan.decision} action={plan.action}", "decision")


def freshness_gate(plan: Plan, now: float, max_age_s: float) -> Verdict | None:
    """A plan older than max_age_s describes a market that is gone (e.g. after an outage): block it.
    One from further ahead than clock skew explains (a year 2100, or milliseconds read as seconds)
    has a timestamp nobody can trust: block it too, or it would never grow stale."""
    if plan.emergency or plan.timestamp is None:
        return None
    age = now - plan.timestamp
    if age > max_age_s:
        return Verdict("blocked", f"stale: {age:.0f}s old, limit {max_age_s:.0f}s", "stale")
    if -age > MAX_FUTURE_S:
        return Verdict(
            "blocked",
            f"from_future: timestamp {plan.timestamp:.3f} is {-age:.0f}s ahead of this host's clock "
            f"(limit {MAX_FUTURE_S:.0f}s; epoch seconds expected)",
            "stale",
        )
    return None


def claim_verdict(claim: ClaimResult) -> Verdict | None:
    """None when the plan may send (claimed, or resumed after a crash)."""
    if claim.kind in {"claimed", "resume"}:
        return None
    if claim.kind == "halted":
        return Verdict("halted", f"kill switch {claim.detail}", "switch")
    if claim.kind == "reduce_only":
        return Verdict(
            "reduce_only_blocked", f"kill switch {claim.detail}: plan has a non-reducing step", "switch"
        )
    if claim.kind == "duplicate":
        return Verdict("duplicate", "plan_id already claimed by another entry", "dedupe")
    if claim.kind == "rate_limited":
        scope = claim.detail.partition(":")[0]
        return Verdict("blocked", f"rate_limited: {claim.detail} orders", f"rate_{scope}")
    if claim.kind == "permit_missing":
        return Verdict("blocked", f"permit_timeout: no {claim.detail} permit before the deadline", "permit")
    if claim.kind == "denied":
        return Verdict("blocked", f"permit_denied: {claim.detail}", "permit")
    return Verdict("blocked", f"unexpected claim answer {claim.kind!r}", "claim")


def _json_object(raw: str) -> dict[str, object]:
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
