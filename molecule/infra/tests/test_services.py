"""Units, listening sockets and file modes of the four infrastructure roles."""

import re

import pytest
from infra_helpers import http_text
from scenario_helpers import (
    SECRETS,
    assert_answers_prometheus_only,
    assert_each_secret_is_its_owners_only,
    assert_runs_as_its_own_user,
    assert_unit_running,
)
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


NODE_EXPORTER_TLS = "/etc/quantum/tls/prometheus-node-exporter"
REDIS_EXPORTER_TLS = "/etc/quantum/tls/prometheus-redis-exporter"


# Debian's units of prometheus, alertmanager and the exporters score 3.9 to 9.2 ("UNSAFE") as shipped;
# the roles' drop-ins share the apply layer's sandbox (roles/apply_layer/templates/hardening.conf.j2).
MAX_EXPOSURE = 2.5


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_sandboxed(host: Host, unit: str) -> None:
    verdict = host.check_output("systemd-analyze security --no-pager %s | tail -n 1", unit)
    found = re.search(r"exposure level for \S+: ([0-9.]+)", verdict)
    assert found, verdict
    assert float(found.group(1)) <= MAX_EXPOSURE, verdict


@pytest.mark.parametrize("unit", UNITS[1:])
def test_each_service_runs_as_its_own_user(host: Host, unit: str) -> None:
    assert_runs_as_its_own_user(host, unit)


def test_each_secret_is_readable_by_its_own_service_only(host: Host) -> None:
    """`cat` as each service user: the node exporter cannot read the Redis exporter's key or password,
    Prometheus neither, nor Alertmanager's receivers; each reads its own."""
    assert_each_secret_is_its_owners_only(host, set(SECRETS))


def test_node_exporter_still_sees_the_host(host: Host) -> None:
    """The sandbox hides /proc but processes by default (ProcSubset=pid); the node exporter's drop-in
    gives it back the rest of /proc, or it would export no memory or CPU at all."""
    metrics = http_text(host, "https://127.0.0.1:9100/metrics")
    assert "\nnode_memory_MemTotal_bytes " in metrics
    assert "\nnode_cpu_seconds_total{" in metrics


@pytest.mark.parametrize("port", [9100, 9121])
def test_metrics_answer_prometheus_certificate_only(host: Host, port: int) -> None:
    assert_answers_prometheus_only(host, f"127.0.0.1:{port}")


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
        ("/etc/default/prometheus-redis-exporter.passwords.json", "root", "prometheus-redis-exporter", 0o640),
        ("/etc/default/prometheus-node-exporter", "root", "root", 0o644),
        ("/etc/prometheus/prometheus.yml", "root", "prometheus", 0o640),
        ("/etc/prometheus/rules", "root", "prometheus", 0o750),
        ("/etc/prometheus/alertmanager.yml", "root", "prometheus-alertmanager", 0o640),
        # Web users' bcrypt hashes: root writes them, the services read them.
        ("/etc/prometheus/web.yml", "root", "prometheus", 0o640),
        ("/etc/prometheus/alertmanager-web.yml", "root", "prometheus-alertmanager", 0o640),
        # Each exporter's own key, in a directory only its group enters.
        (NODE_EXPORTER_TLS, "root", "prometheus-node-exporter", 0o750),
        (f"{NODE_EXPORTER_TLS}/metrics.key", "root", "prometheus-node-exporter", 0o640),
        (REDIS_EXPORTER_TLS, "root", "prometheus-redis-exporter", 0o750),
        (f"{REDIS_EXPORTER_TLS}/metrics.key", "root", "prometheus-redis-exporter", 0o640),
        # Silences and notification state: systemd's StateDirectory= re-owns what Debian made as prometheus.
        ("/var/lib/prometheus/alertmanager", "prometheus-alertmanager", "prometheus-alertmanager", 0o750),
    ],
)
def test_file_owner_and_mode(host: Host, path: str, user: str, group: str, mode: int) -> None:
    target = host.file(path)
    assert (target.user, target.group, target.mode) == (user, group, mode)
