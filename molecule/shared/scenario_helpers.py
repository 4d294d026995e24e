"""Shared by several scenarios' testinfra tests: the operator's kill-switch play, and a bounded wait."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

RELEASE_PYTHON = "/opt/quantum/apply-layer/current/venv/bin/python"
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def run_playbook(playbook: str, **extra_vars: str) -> subprocess.CompletedProcess[str]:
    """One of playbooks/ against the scenario's inventory, as an operator runs it."""
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    command = [
        "ansible-playbook",
        "-i",
        str(inventory),
        f"playbooks/{playbook}",
        "-e",
        json.dumps(extra_vars),
    ]
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"))
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False
    )


def kill_switch_play(**extra_vars: str) -> subprocess.CompletedProcess[str]:
    """playbooks/kill_switch.yml: -e kill_switch=on|off|reduce-only -e reason=..."""
    return run_playbook("kill_switch.yml", **extra_vars)


def wait_for(check: Callable[[], bool], timeout_s: float = 120, every_s: float = 3) -> bool:
    """Poll until `check` holds or the bounded time runs out (never asserts on time itself)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
