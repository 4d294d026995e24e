"""State after side_effect.yml: A deployed, B deployed and rolled back, a broken C refused."""

import re

import pytest
from testinfra.host import Host

BASE = "/opt/quantum/apply-layer"
A, B, C = "1.0.0", "1.0.1+rollbacktest", "1.0.2+broken"
FETCH = "import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def releases(host: Host) -> list[str]:
    names: str = host.check_output(f"ls {BASE}/releases")
    return names.split()


def test_current_is_release_a(host: Host) -> None:
    current = host.file(f"{BASE}/current")
    assert current.is_symlink
    assert current.linked_to.rsplit("/", 1)[1].startswith(f"{A}-")


def test_service_runs_release_a(host: Host) -> None:
    assert host.service("quantum-apply-layer").is_running, host.run(
        "journalctl -u quantum-apply-layer --no-pager -n 40"
    ).stdout
    metrics = host.check_output(f"python3 -c '{FETCH}' http://127.0.0.1:8000/metrics")
    assert re.search(rf'^apply_build_info{{[^}}]*version="{re.escape(A)}"', metrics, re.MULTILINE), metrics


@pytest.mark.parametrize(("version", "on_disk"), [(A, True), (B, True), (C, False)])
def test_rolled_back_release_stays_and_broken_one_is_gone(host: Host, version: str, on_disk: bool) -> None:
    assert any(name.startswith(f"{version}-") for name in releases(host)) == on_disk, releases(host)


def test_history_records_every_switch_with_its_kind(host: Host) -> None:
    lines = host.file(f"{BASE}/shared/history").content_string.splitlines()
    switches = [(kind, release.rsplit("-", 1)[0]) for _, kind, release in (line.split() for line in lines)]
    expected = [("deploy", A), ("deploy", B), ("rollback", A), ("deploy", C), ("rollback", A)]
    assert switches == expected, lines
