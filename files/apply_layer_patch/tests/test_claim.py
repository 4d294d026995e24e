"""claim.py and claim.lua state one contract: the KEYS and ARGV in the same order. This fails when
one of them changes and the other does not."""

from __future__ import annotations

import re
from importlib import resources

from plans import plan_fields

from quantum_apply_layer import claim
from quantum_apply_layer.claim import CLAIM_ARGV, CLAIM_KEYS, claim_args, claim_keys
from quantum_apply_layer.config import load_settings
from quantum_apply_layer.plan import parse_plan

LUA = resources.files("quantum_apply_layer").joinpath("claim.lua").read_text(encoding="utf-8")


def _numbered(header: str, name: str) -> list[str]:
    """`-- NAME: 1 a, 2 b (x, y),\n--       3 c` -> ["a", "b (x, y)", "c"]."""
    block = re.search(rf"^-- {name}: (.*?)(?=^-- [A-Z]+:|^[^-]|\Z)", header, re.M | re.S)
    assert block, f"claim.lua's header has no {name} line"
    flat = " ".join(line.removeprefix("--").strip() for line in block.group(1).splitlines())
    items = re.split(r",? (?=\d+ )", " " + flat)
    return [re.sub(r"^\d+ ", "", item).rstrip(",").strip() for item in items if item.strip()]


def test_the_script_header_lists_the_keys_and_argv_in_claim_py_order() -> None:
    assert _numbered(LUA, "KEYS") == list(CLAIM_KEYS)
    assert _numbered(LUA, "ARGV") == list(CLAIM_ARGV)


def test_claim_py_docstring_states_the_same_contract() -> None:
    assert claim.__doc__
    contract = claim.__doc__.split("\n\n")[1]  # the KEYS and ARGV paragraph
    as_lua = "\n".join(f"-- {line}" for line in contract.splitlines()) + "\n"
    assert _numbered(as_lua, "KEYS") == list(CLAIM_KEYS)
    assert _numbered(as_lua, "ARGV") == list(CLAIM_ARGV)


def test_the_script_reads_exactly_the_declared_keys_and_argv() -> None:
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", LUA)}
    used_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", LUA)}
    assert used_keys == set(range(1, len(CLAIM_KEYS) + 1))
    assert used_argv == set(range(1, len(CLAIM_ARGV) + 1))


def test_the_builders_give_one_value_per_declared_slot() -> None:
    settings = load_settings(
        {"APPLY_MAX_ORDERS_PER_SECOND": "7", "APPLY_MAX_ORDERS_PER_SECOND_PER_SYMBOL": "3"}
    )
    plan = parse_plan(plan_fields("p1", symbol="ETHUSDT"))
    assert len(claim_keys(plan.plan_id, plan.symbol)) == len(CLAIM_KEYS)
    args = claim_args(plan, "1-0", settings)
    assert len(args) == len(CLAIM_ARGV)
    # production: permits required; a full close only reduces; one order; the limits; no emergency
    assert args == ["1-0", "1", "1", settings.dedupe_ttl_s, settings.consumer_name, 1, 7, 3, "0"]
