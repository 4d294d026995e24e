"""Every gate of gates.py alone, without a service: what stops an order, and what lets it through."""

from __future__ import annotations

import pytest
from plans import plan_fields

from quantum_apply_layer import gates
from quantum_apply_layer.claim import ClaimResult
from quantum_apply_layer.gates import (
    claim_verdict,
    decision_gate,
    emergency_gate,
    freshness_gate,
    notional_gate,
    position_side_gate,
    switch_gate,
)
from quantum_apply_layer.metrics import REGISTRY
from quantum_apply_layer.plan import parse_plan
from quantum_apply_layer.statuses import ResultStatus
from quantum_apply_layer.switch import SwitchState


@pytest.mark.parametrize(
    ("action", "decision", "stopped"),
    [
        ("FULL_CLOSE_PROPOSED", "EXECUTE", False),
        ("FULL_CLOSE_PROPOSED", "SKIP", True),
        ("FULL_CLOSE_PROPOSED", "BLOCKED", True),
        ("HOLD", "EXECUTE", True),
    ],
)
def test_decision_gate_lets_only_an_executable_plan_through(
    action: str, decision: str, stopped: bool
) -> None:
    steps = "[]" if action == "HOLD" else plan_fields("p")["steps"]
    verdict = decision_gate(parse_plan(plan_fields("p1", action=action, decision=decision, steps=steps)))
    assert (verdict is not None) is stopped
    if verdict is not None:
        assert verdict.status == ResultStatus.SKIPPED
        assert verdict.reason == f"decision={decision} action={action}"


@pytest.mark.parametrize(
    ("reply", "status", "reason", "gate"),
    [
        (["halted", "global:halted"], "halted", "kill switch global:halted", "switch"),
        (
            ["reduce_only", "symbol:reduce_only"],
            "reduce_only_blocked",
            "kill switch symbol:reduce_only: plan has a non-reducing step",
            "switch",
        ),
        (["duplicate", "{}"], "duplicate", "plan_id already claimed by another entry", "dedupe"),
        (["rate_limited", "global:10/s"], "blocked", "rate_limited: global:10/s orders", "rate_global"),
        (["rate_limited", "symbol:3/s"], "blocked", "rate_limited: symbol:3/s orders", "rate_symbol"),
        (
            ["permit_missing", "governor,p33"],
            "blocked",
            "permit_timeout: no governor,p33 permit before the deadline",
            "permit",
        ),
        (["denied", "p33", "too_big"], "blocked", "permit_denied: p33:too_big", "permit"),
        ([b"denied", b"emergency", b"no_token"], "blocked", "permit_denied: emergency:no_token", "permit"),
        (
            [b"held_back", b"orders_10s", 1500],
            "blocked",
            "held_back: the exchange's orders_10s budget is used up for 1.5s; nothing sent, permits kept",
            "exchange_limit",
        ),
        (
            ["held_back", "blocked", 29500],
            "blocked",
            "held_back: a Retry-After holds every process for 29.5s; nothing sent, permits kept",
            "exchange_limit",
        ),
        (["surprise"], "blocked", "unexpected claim answer 'surprise'", "claim"),
    ],
)
def test_claim_verdict_names_each_refusal(
    reply: list[bytes | str], status: str, reason: str, gate: str
) -> None:
    verdict = claim_verdict(ClaimResult.from_script(reply))
    assert verdict is not None
    assert (verdict.status, verdict.reason, verdict.gate) == (status, reason, gate)


@pytest.mark.parametrize("kind", ["claimed", "resume"])
def test_claim_verdict_lets_a_claimed_or_resumed_plan_send(kind: str) -> None:
    claim = ClaimResult.from_script([kind, '{"state": "claimed", "p33": "{\\"allow\\": true}"}'])
    assert claim_verdict(claim) is None
    assert claim.p33_permit == {"allow": True}


@pytest.mark.parametrize(
    ("p33_amt", "exchange_amt", "stopped"),
    [
        (None, 1.0, False),
        (1.0, 1.0, False),
        (0.5, 2.0, False),
        (0.0, -1.0, False),
        (1.0, -1.0, True),
        (-2.0, 3.0, True),
    ],
)
def test_position_side_gate_blocks_a_permit_for_the_other_side(
    p33_amt: float | None, exchange_amt: float, stopped: bool
) -> None:
    verdict = position_side_gate(p33_amt, exchange_amt)
    assert (verdict is not None) is stopped
    if verdict is not None:
        assert verdict.status == ResultStatus.BLOCKED
        assert verdict.reason == f"position_mismatch: P3.3 saw {p33_amt}, exchange holds {exchange_amt}"


@pytest.mark.parametrize(
    ("quantity", "price", "limit", "reason"),
    [
        (1.0, 50_000.0, None, None),  # no limit set
        (1.0, 50_000.0, 50_000.0, None),  # at the limit
        (1.0, 50_000.01, 50_000.0, "notional: 50000.01 USDT over the 50000 USDT limit per order"),
        (1.0, 0.0, 25_000.0, "notional: no price to check the 25000 USDT limit against"),
    ],
)
def test_notional_gate_blocks_over_the_limit_never_trims(
    quantity: float, price: float, limit: float | None, reason: str | None
) -> None:
    verdict = notional_gate(quantity, price, limit)
    assert (verdict.reason if verdict else None) == reason
    if verdict is not None:
        assert (verdict.status, verdict.gate) == (ResultStatus.BLOCKED, "notional")


@pytest.mark.parametrize(
    ("side", "position", "reason"),
    [
        ("ANY", 1.0, None),
        ("ANY", -1.0, None),
        ("SELL", 1.0, None),  # selling closes a long
        ("BUY", -1.0, None),  # buying closes a short
        ("BUY", 1.0, "emergency: BUY does not close the position of 1.0"),
        ("SELL", -1.0, "emergency: SELL does not close the position of -1.0"),
        ("ANY", 0.0, "emergency: no open position"),
    ],
)
def test_emergency_gate_only_reduces_on_the_named_side(
    side: str, position: float, reason: str | None
) -> None:
    verdict = emergency_gate(side, position)
    assert (verdict.reason if verdict else None) == reason


def _risk_blocks(gate: str) -> float:
    return REGISTRY.get_sample_value("apply_risk_block_total", {"gate": gate}) or 0.0


@pytest.mark.parametrize(
    ("gate", "counted"),
    [("stale", True), ("notional", True), ("rate_symbol", True), ("permit", False), ("switch", False)],
)
def test_only_the_risk_gates_are_counted(gate: str, counted: bool) -> None:
    before = _risk_blocks(gate)
    gates.count_risk_block(gates.Verdict(ResultStatus.BLOCKED, "test", gate))
    assert _risk_blocks(gate) - before == (1.0 if counted else 0.0)


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [
        (0, None),  # now
        (-299, None),
        (-301, "stale"),
        (4, None),  # clock skew between hosts
        (3600, "from_future"),
    ],
)
def test_freshness_has_two_bounds(timestamp: float, status: str | None) -> None:
    now = 1_800_000_000.0
    plan = parse_plan(plan_fields("p1", timestamp=str(now + timestamp)))
    verdict = freshness_gate(plan, now, 300)
    assert (verdict.reason.partition(":")[0] if verdict else None) == status


def test_a_timestamp_in_milliseconds_is_blocked_not_trusted() -> None:
    now = 1_800_000_000.0
    verdict = freshness_gate(parse_plan(plan_fields("p1", timestamp=str(now * 1000))), now, 300)
    assert verdict is not None
    assert verdict.status == "blocked"
    assert "epoch seconds expected" in verdict.reason


STOP_STEP = '[{"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000}]'
RUNNING, HALTED, REDUCE_ONLY, INVALID = (
    SwitchState.RUNNING,
    SwitchState.HALTED,
    SwitchState.REDUCE_ONLY,
    SwitchState.INVALID,
)


@pytest.mark.parametrize(
    ("fields", "global_state", "symbol_state", "reason"),
    [
        ({}, RUNNING, RUNNING, None),
        ({}, HALTED, RUNNING, "kill switch global:halted"),
        ({}, RUNNING, INVALID, "kill switch symbol:invalid"),
        ({}, REDUCE_ONLY, RUNNING, None),  # a close only reduces
        (
            {"action": "UPDATE_SL", "steps": STOP_STEP},
            REDUCE_ONLY,
            RUNNING,
            "kill switch global:reduce_only: plan has a non-reducing step",
        ),
        ({"emergency": "true", "emergency_side": "SELL"}, HALTED, HALTED, None),  # the operator's close
    ],
)
def test_switch_gate_reads_the_switches_as_the_claim_does(
    fields: dict[str, str], global_state: SwitchState, symbol_state: SwitchState, reason: str | None
) -> None:
    verdict = switch_gate(parse_plan(plan_fields("p1", **fields)), global_state, symbol_state)
    assert (verdict.reason if verdict else None) == reason
