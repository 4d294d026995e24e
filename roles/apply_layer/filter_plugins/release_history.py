"""Filters reading the apply layer's release history, `shared/history`: one line per switch of `current`,
"<UTC time> <deploy|rollback> <release id>" (lines from before kinds were written: "<UTC time> <release id>",
a deploy). The history is the only record of order: release names do not sort by time, mtimes lie.

    releases | apply_layer_releases_to_prune(history, keep, deployed)   the releases prune.yml removes
    history | apply_layer_rollback_target(running, releases)            the release rollback.yml goes back to
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

ROLLBACK = "rollback"
DEPLOY = "deploy"


class Switch(NamedTuple):
    kind: str
    release: str


def read_switches(history: str) -> list[Switch]:
    """The history's switches, oldest first; blank lines skipped."""
    switches = []
    for line in history.splitlines():
        fields = line.split()
        if fields:
            kind = fields[-2] if len(fields) >= 3 else DEPLOY
            switches.append(Switch(kind, fields[-1]))
    return switches


def _newest_first(switches: Iterable[Switch]) -> Iterator[str]:
    """Each release once, at its most recent switch, newest first."""
    seen: set[str] = set()
    for switch in reversed(list(switches)):
        if switch.release not in seen:
            seen.add(switch.release)
            yield switch.release


def releases_to_prune(on_disk: Iterable[str], history: str, keep: int, deployed: str) -> list[str]:
    """The releases on disk beyond the `keep` most recently switched to; `deployed` is always kept."""
    present = set(on_disk)
    recent = [release for release in _newest_first(read_switches(history)) if release in present]
    kept = {*recent[:keep], deployed}
    return sorted(present - kept)


def rollback_target(history: str, running: str, on_disk: Iterable[str]) -> str:
    """Read as a stack (a deploy pushes, a rollback pops): the newest release still on disk that ran before
    `running` was last deployed, never `running` itself; "" when there is none."""
    switches = read_switches(history)
    deployed_at = len(switches)
    for index, switch in enumerate(switches):
        if switch.release == running and switch.kind != ROLLBACK:
            deployed_at = index
    present = set(on_disk)
    earlier = _newest_first(switches[:deployed_at])
    return next((release for release in earlier if release != running and release in present), "")


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "apply_layer_releases_to_prune": releases_to_prune,
            "apply_layer_rollback_target": rollback_target,
        }
