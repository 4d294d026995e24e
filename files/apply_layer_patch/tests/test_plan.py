"""Plan validation: every malformed shape has a dead-letter reason, and nothing else is ever raised."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plans import plan_fields

from quantum_apply_layer.entry import decode_entry
from quantum_apply_layer.plan import Action, OrderType, PlanError, StepKind, parse_plan
from quantum_apply_layer.sample_plans import MALFORMED, changed


def test_a_full_plan_parses() -> None:
    steps = json.dumps(
        [
            {"step": "CLOSE_PARTIAL_75", "type": "market_reduce_only"},
            {"step": "UPDATE_SL", "type": "stop_loss_order", "price": "41000.5"},
        ]
    )
    plan = parse_plan(plan_fields("p1", steps=steps, action="PARTIAL_75", close_qty="0.2", price="42000"))
    assert plan.action is Action.PARTIAL_75
    assert [(s.kind, s.order_type, s.pct, s.price) for s in plan.steps] == [
        (StepKind.CLOSE_PARTIAL_75, OrderType.MARKET_REDUCE_ONLY, 75.0, None),
        (StepKind.UPDATE_SL, OrderType.STOP_LOSS_ORDER, None, 41000.5),
    ]
    assert plan.reason_codes == ("kill_score_high",)
    assert not plan.only_reduces


@pytest.mark.parametrize(("reason", "change"), MALFORMED)
def test_each_malformed_shape_has_its_reason(reason: str, change: dict[str, str | None]) -> None:
    with pytest.raises(PlanError) as raised:
        parse_plan(changed(plan_fields("p1"), change))
    assert raised.value.reason == reason


def test_a_missing_required_field_is_named() -> None:
    fields = plan_fields("p1")
    del fields["decision"]
    with pytest.raises(PlanError, match="'decision'"):
        parse_plan(fields)


text = st.text(max_size=30)
step_values = st.one_of(text, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
steps = st.one_of(
    text,
    st.lists(
        st.dictionaries(st.sampled_from(["step", "type", "pct", "price", "x"]), step_values), max_size=4
    ).map(json.dumps),
    st.lists(step_values, max_size=3).map(json.dumps),
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "plan_id": text,
        "symbol": st.sampled_from(["BTCUSDT", "", "eth", "X" * 40]) | text,
        "action": st.sampled_from([a.value for a in Action]) | text,
        "decision": st.sampled_from(["EXECUTE", "SKIP", "BLOCKED"]) | text,
        "steps": steps,
        "kill_score": text,
        "close_qty": text,
        "timestamp": text,
    },
)


@settings(max_examples=500, deadline=None)
@given(fields)
def test_any_input_parses_or_names_its_reason(candidate: dict[str, str]) -> None:
    error = None
    try:
        parse_plan(candidate)
    except PlanError as raised:  # anything else escapes and fails the test
        error = raised
    if error is not None:
        assert error.reason
        assert str(error).startswith(error.reason + ": ")


@pytest.mark.parametrize(
    ("action", "steps"),
    [
        ("PARTIAL_50", [{"step": "CLOSE_FULL", "type": "market_reduce_only"}]),
        ("PARTIAL_50", [{"step": "CLOSE_PARTIAL_50", "type": "market_reduce_only", "pct": 100}]),
        ("FULL_CLOSE_PROPOSED", [{"step": "CLOSE_PARTIAL_75", "type": "market_reduce_only"}]),
        ("PARTIAL_75", [{"step": "CLOSE_PARTIAL_75", "type": "market_reduce_only"}] * 2),
        ("UPDATE_SL", [{"step": "CLOSE_FULL", "type": "market_reduce_only"}]),
        ("HOLD", [{"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000}]),
    ],
)
def test_an_action_its_steps_contradict_is_dead_lettered(action: str, steps: list[object]) -> None:
    """A PARTIAL_50 plan closes 50% or nothing: action and steps must say the same."""
    with pytest.raises(PlanError) as raised:
        parse_plan(plan_fields("p1", action=action, steps=json.dumps(steps)))
    assert raised.value.reason == "action_steps_mismatch"


def test_each_action_with_its_own_steps_parses() -> None:
    stop = {"step": "UPDATE_SL", "type": "stop_loss_order", "price": 40000}
    for action, close in [("PARTIAL_50", "CLOSE_PARTIAL_50"), ("FULL_CLOSE_PROPOSED", "CLOSE_FULL")]:
        steps = json.dumps([{"step": close, "type": "market_reduce_only"}, stop])
        assert len(parse_plan(plan_fields("p1", action=action, steps=steps)).steps) == 2
    assert parse_plan(plan_fields("p1", action="UPDATE_SL", steps=json.dumps([stop]))).steps[0].price == 40000


@pytest.mark.parametrize("steps", ["[" * 10_000 + "]" * 10_000, '[{"a":' * 5000, '[[[["x"]]]]'])
def test_steps_nested_too_deep_are_refused_before_parsing(steps: str) -> None:
    with pytest.raises(PlanError) as raised:  # never RecursionError
        parse_plan(plan_fields("p1", steps=steps))
    assert raised.value.reason == "steps_too_deep"


def test_brackets_inside_strings_are_not_nesting() -> None:
    steps = json.dumps([{"step": "CLOSE_FULL", "type": "market_reduce_only", "note": '[[[[{{{{\\"'}])
    assert len(parse_plan(plan_fields("p1", steps=steps)).steps) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({b"plan_id": b"p\xff1"}, "not_utf8"),
        ({b"\xc3\x28": b"x"}, "not_utf8"),
        ({b"steps": b"x" * 20_000}, "field_too_large"),
        ({b"n" * 200: b"x"}, "field_too_large"),
        ({str(n).encode(): b"x" for n in range(65)}, "too_many_fields"),
    ],
)
def test_raw_entries_that_cannot_be_text_are_dead_lettered(raw: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(PlanError) as raised:
        decode_entry(raw)
    assert raised.value.reason == reason
