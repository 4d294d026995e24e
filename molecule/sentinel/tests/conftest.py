"""The scenario's hosts (reached with `docker exec`) and helpers to ask Redis nodes and Sentinels."""

from __future__ import annotations

import pytest
import testinfra
import yaml
from scenario_helpers import PROJECT, RELEASE_PYTHON, http_json, kill_switch_play, run_playbook, wait_for
from testinfra.host import Host

# scenario_helpers: shared with the other scenarios (molecule/shared, on PYTHONPATH from
# .config/molecule/config.yml), re-exported for this scenario's test files.
__all__ = [
    "APPLY",
    "NODES",
    "RELEASE_PYTHON",
    "address",
    "http_json",
    "kill_switch_play",
    "node_cli",
    "primary_name",
    "run_playbook",
    "sentinel_cli",
    "wait_for",
]

NODES = ("qh-sentinel-redis-1", "qh-sentinel-redis-2", "qh-sentinel-redis-3")
APPLY = "qh-sentinel-apply"
GROUP_VARS = PROJECT / "inventories" / "ha" / "group_vars"
SHARED_SETTINGS = yaml.safe_load((GROUP_VARS / "all" / "main.yml").read_text())
ADMIN_PASSWORD = SHARED_SETTINGS["redis_admin_password"]
# Redis and the Sentinels serve TLS only; each host has the CA certificate that verifies them.
REDIS_CA = SHARED_SETTINGS["redis_tls_ca_file"]
SENTINEL_SETTINGS = yaml.safe_load((GROUP_VARS / "quantum_redis" / "main.yml").read_text())


@pytest.fixture(scope="session")
def nodes() -> dict[str, Host]:
    return {name: testinfra.get_host(f"docker://{name}") for name in NODES}


@pytest.fixture(scope="session")
def apply_host() -> Host:
    return testinfra.get_host(f"docker://{APPLY}")


def _admin_cli(host: Host, port: int, *args: str) -> str:
    """redis-cli as the admin user, over TLS, the only way in (the inventory's fake password; never on a real
    host's command line)."""
    command = host.run(
        "REDISCLI_AUTH=%s redis-cli --tls --cacert %s -p %s --user admin --no-auth-warning"
        + " %s" * len(args),
        ADMIN_PASSWORD, REDIS_CA, str(port), *args,
    )  # fmt: skip
    assert command.rc == 0, command.stderr
    return str(command.stdout).strip()


def node_cli(host: Host, *args: str) -> str:
    return _admin_cli(host, 6379, *args)


def sentinel_cli(host: Host, *args: str) -> str:
    return _admin_cli(host, 26379, *args)


def address(host: Host) -> str:
    return str(host.interface("eth0").addresses[0])


def primary_name(nodes: dict[str, Host], asked: Host) -> str:
    """The node the Sentinel on `asked` names as primary now."""
    primary_ip = sentinel_cli(asked, "SENTINEL", "get-master-addr-by-name", "quantum").splitlines()[0]
    return next(name for name, host in nodes.items() if address(host) == primary_ip)
