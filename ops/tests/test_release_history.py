"""roles/apply_layer/filter_plugins/release_history.py: which releases prune.yml removes and which one
rollback.yml goes back to, read from shared/history alone (never names or mtimes)."""

import pytest
from role_plugins import filter_plugin

release_history = filter_plugin("release_history")
releases_to_prune = release_history.releases_to_prune
rollback_target = release_history.rollback_target


def history(*switches: str) -> str:
    """History lines from "kind release" pairs, each stamped as activate.yml stamps it."""
    return "".join(f"2026-11-27T10:{minute:02d}:00Z {switch}\n" for minute, switch in enumerate(switches))


def test_both_filters_are_registered_under_the_role_prefix() -> None:
    assert release_history.FilterModule().filters() == {
        "apply_layer_releases_to_prune": releases_to_prune,
        "apply_layer_rollback_target": rollback_target,
    }


def test_prune_keeps_the_most_recently_activated_not_the_highest_names() -> None:
    lines = history("deploy 2.0.0-b", "deploy 1.0.0-a", "deploy 3.0.0-c")

    assert releases_to_prune(["1.0.0-a", "2.0.0-b", "3.0.0-c"], lines, 2, "3.0.0-c") == ["2.0.0-b"]


def test_prune_removes_a_release_never_activated_and_always_keeps_the_deployed_one() -> None:
    lines = history("deploy a", "deploy b", "rollback a")

    assert releases_to_prune(["a", "b", "built-then-failed"], lines, 1, "b") == ["built-then-failed"]


def test_prune_counts_a_release_once_at_its_latest_switch() -> None:
    lines = history("deploy a", "deploy b", "deploy a", "deploy c")

    assert releases_to_prune(["a", "b", "c"], lines, 2, "c") == ["b"]


def test_prune_with_an_empty_history_keeps_only_the_deployed_release() -> None:
    assert releases_to_prune(["a", "b"], "", 5, "b") == ["a"]


def test_rollback_goes_to_the_release_that_ran_before() -> None:
    assert rollback_target(history("deploy a", "deploy b"), "b", ["a", "b"]) == "a"


def test_a_second_rollback_never_returns_to_the_release_rolled_back_from() -> None:
    lines = history("deploy a", "deploy b", "rollback a")

    assert rollback_target(lines, "a", ["a", "b"]) == ""


def test_rollbacks_pop_the_history_like_a_stack() -> None:
    lines = history("deploy a", "deploy b", "deploy c", "rollback b")

    assert rollback_target(lines, "b", ["a", "b", "c"]) == "a"


def test_rollback_after_redeploying_an_old_release_goes_to_the_one_it_replaced() -> None:
    lines = history("deploy a", "deploy b", "deploy a")

    assert rollback_target(lines, "a", ["a", "b"]) == "b"


def test_rollback_skips_releases_no_longer_on_disk() -> None:
    lines = history("deploy a", "deploy b", "deploy c")

    assert rollback_target(lines, "c", ["a", "c"]) == "a"
    assert rollback_target(lines, "c", ["c"]) == ""


def test_rollback_of_a_release_missing_from_the_history_goes_to_the_newest_other() -> None:
    assert rollback_target(history("deploy a", "deploy b"), "hand-made", ["a", "b", "hand-made"]) == "b"


@pytest.mark.parametrize(
    "lines",
    [
        "2026-11-27T10:00:00Z a\n2026-11-27T10:01:00Z b\n",
        "2026-11-27T10:00:00Z deploy a\n\n2026-11-27T10:01:00Z b\n   \n",
    ],
    ids=["lines-without-kind", "blank-lines"],
)
def test_lines_from_before_kinds_were_written_are_deploys(lines: str) -> None:
    assert rollback_target(lines, "b", ["a", "b"]) == "a"
    assert release_history.read_switches(lines)[-1] == release_history.Switch("deploy", "b")
