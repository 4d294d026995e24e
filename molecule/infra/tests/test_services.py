"""Units, listening sockets and file modes of the four infrastructure roles."""

import pytest
from infra_helpers import assert_unit_running
from testinfra.host import Host

UNITS = [
    "redis-server",
    "prometheus-node-exporter",
    "prometheus-redis-exporter",
    "prometheus",
    "prometheus-alertmanager",
]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_running_and_enabled(host: Host, unit: str) -> None:
    assert_unit_running(host, unit)


@pytest.mark.parametrize("port", [6379, 9100, 9121, 9090, 9093])
def test_listens_on_loopback_only(host: Host, port: int) -> None:
    tcp = [socket for socket in host.socket.get_listening_sockets() if socket.startswith("tcp")]
    assert {socket for socket in tcp if socket.endswith(f":{port}")} == {f"tcp://127.0.0.1:{port}"}


def test_alertmanager_cluster_port_is_closed(host: Host) -> None:
    assert not [s for s in host.socket.get_listening_sockets() if s.endswith(":9094")]


@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("/etc/redis/redis.conf", "redis", "redis", 0o640),
        ("/etc/redis/quantum.conf", "redis", "redis", 0o640),
        ("/etc/redis/users.acl", "redis", "redis", 0o640),
        ("/etc/default/prometheus-redis-exporter", "root", "root", 0o600),
        ("/etc/default/prometheus-redis-exporter.passwords.json", "root", "prometheus", 0o640),
        ("/etc/default/prometheus-node-exporter", "root", "root", 0o644),
        ("/etc/prometheus/prometheus.yml", "root", "prometheus", 0o640),
        ("/etc/prometheus/rules", "root", "prometheus", 0o750),
        ("/etc/prometheus/alertmanager.yml", "root", "prometheus", 0o640),
    ],
)
def test_file_owner_and_mode(host: Host, path: str, user: str, group: str, mode: int) -> None:
    target = host.file(path)
    assert (target.user, target.group, target.mode) == (user, group, mode)
