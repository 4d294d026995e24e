"""The kill-switch play halts and resumes real orders (against the emulator), through the operator's path."""

import json
import uuid
from pathlib import Path
from typing import Any

from conftest import RELEASE_PYTHON, http_text, kill_switch_play
from testinfra.host import Host

PROBE = (Path(__file__).parent / "plan_probe.py").read_text()


def send_plan(host: Host) -> dict[str, Any]:
    plan_id = f"verify-{uuid.uuid4().hex[:10]}"
    result = host.run(f"{RELEASE_PYTHON} - {plan_id} <<'PROBE'\n{PROBE}\nPROBE")
    assert result.rc == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def test_switch_on_halts_and_off_resumes(host: Host) -> None:
    switched_on = kill_switch_play(kill_switch="on", reason="molecule verify: halt")
    assert switched_on.returncode == 0, switched_on.stdout + switched_on.stderr
    try:
        assert "kill switch (global): halted" in host.check_output("quantum-apply-layer status")
        assert send_plan(host) == {"status": "halted", "orders": 0}
    finally:
        switched_off = kill_switch_play(kill_switch="off", reason="molecule verify: resume")
    assert switched_off.returncode == 0, switched_off.stdout + switched_off.stderr
    assert "reason='molecule verify: resume'" in host.check_output("quantum-apply-layer status")
    measured_before = gate_measured(host)
    assert send_plan(host) == {"status": "executed", "orders": 1}
    # The service measured what its gate added to that order, on the deployed host's Python and aiohttp.
    assert gate_measured(host) == measured_before + 1


def gate_measured(host: Host) -> float:
    """How many orders apply_gate_seconds has measured, whatever `since`."""
    metrics = http_text(host, "http://127.0.0.1:8000/metrics").splitlines()
    return sum(float(line.split()[-1]) for line in metrics if line.startswith("apply_gate_seconds_count"))


def test_play_refuses_bad_arguments() -> None:
    refused = kill_switch_play(kill_switch="maybe", reason="x")
    assert refused.returncode != 0
    assert "Usage: -e kill_switch=on|off|reduce-only" in refused.stdout
