"""Every unit of the stack runs; the apply layer's unit is hardened."""

import re

import pytest
from scenario_helpers import assert_unit_running
from testinfra.host import Host

UNITS = [
    "quantum-apply-layer",
    "quantum-exchange-emulator",
    "redis-server",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "prometheus-redis-exporter",
]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_active_and_enabled(host: Host, unit: str) -> None:
    assert_unit_running(host, unit)


@pytest.mark.parametrize("unit", ["quantum-apply-layer", "quantum-exchange-emulator"])
def test_exposure_is_at_most_two(host: Host, unit: str) -> None:
    output = host.check_output(f"systemd-analyze security {unit} 2>/dev/null | tail -n 1")
    measured = re.search(r"exposure level for \S+: ([0-9.]+)", output)
    assert measured is not None, output
    assert float(measured.group(1)) <= 2.0, output


def test_apply_layer_runs_as_its_own_user(host: Host) -> None:
    user = host.check_output("systemctl show -p User --value quantum-apply-layer")
    assert user == "quantum-apply"
    assert host.user("quantum-apply").shell == "/usr/sbin/nologin"
