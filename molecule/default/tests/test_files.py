"""Env file, credentials and the release layout."""

import pytest
from testinfra.host import Host

BASE = "/opt/quantum/apply-layer"


def test_env_file_is_production_mode_and_secret_bearing(host: Host) -> None:
    env = host.file("/etc/quantum/apply-layer.env")
    assert (env.user, env.group, env.mode) == ("root", "quantum-apply", 0o640)
    lines = env.content_string.splitlines()
    assert "TESTNET=false" in lines
    assert "APPLY_EXCHANGE_URL=http://127.0.0.1:8090" in lines
    assert "APPLY_METRICS_PORT=8000" in lines
    assert any(line.startswith("REDIS_URL=redis://apply_layer:") for line in lines)
    assert not any("BINANCE" in line for line in lines)


@pytest.mark.parametrize("name", ["BINANCE_API_KEY", "BINANCE_API_SECRET"])
def test_credentials_are_root_only(host: Host, name: str) -> None:
    credential = host.file(f"/etc/quantum/credentials/{name}")
    assert (credential.user, credential.group, credential.mode) == ("root", "root", 0o600)
    directory = host.file("/etc/quantum/credentials")
    assert (directory.user, directory.mode) == ("root", 0o700)


def test_current_is_a_release_with_a_revision(host: Host) -> None:
    current = host.file(f"{BASE}/current")
    assert current.is_symlink
    target = current.linked_to
    assert target.startswith(f"{BASE}/releases/")
    release_id = target.rsplit("/", 1)[1]
    revision = host.file(f"{target}/REVISION").content_string
    assert f"release_id={release_id}" in revision.splitlines()
    history = host.file(f"{BASE}/shared/history").content_string.splitlines()
    assert history[-1].split()[-1] == release_id
