"""Shared by several scenarios' testinfra tests: the operator's playbooks, HTTP from inside a container,
and a bounded wait."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testinfra.host import Host

RELEASE_PYTHON = "/opt/quantum/apply-layer/current/venv/bin/python"
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
# curl is not in the image: python3's urllib, with an optional JSON body (then it is a POST) and an
# optional basic-auth login "user:password" (Prometheus and Alertmanager behind --web.config.file).
HTTP = (
    "import base64,json,sys,urllib.request; body=sys.argv[2].encode() if sys.argv[2] else None; "
    "request=urllib.request.Request(sys.argv[1], data=body, headers={'Content-Type': 'application/json'}); "
    "login=base64.b64encode(sys.argv[3].encode()).decode(); "
    "sys.argv[3] and request.add_header('Authorization', 'Basic ' + login); "
    "print(urllib.request.urlopen(request, timeout=5).read().decode())"
)
# Metrics over mutual TLS, read from inside a container: HTTPS verified with the private CA, showing the
# client certificate argv[2] (<stem>.crt and .key) when given. Prints the document, or "refused:" and why.
METRICS = """
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile="/etc/quantum/tls/ca.crt")
if len(sys.argv) > 2:
    context.load_cert_chain(sys.argv[2] + ".crt", sys.argv[2] + ".key")
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5, context=context) as answer:
        print(answer.read().decode())
except Exception as error:
    print("refused:", type(error).__name__, error)
"""
# Prometheus's client certificate (roles/prometheus/tasks/tls.yml), on the monitoring host.
PROMETHEUS_CLIENT = "/etc/prometheus/tls/prometheus-client"


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
    # Plain text: molecule forces colour on, which would hide the recap lines from a test that reads them.
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"
    )
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


def http_json(host: Host, url: str, body: Any = None, login: str = "") -> Any:
    """GET (or POST `body`) from inside a container: the services listen on its loopback."""
    return json.loads(http_text(host, url, "" if body is None else json.dumps(body), login))


def http_text(host: Host, url: str, body: str = "", login: str = "") -> str:
    """The answer's text, from inside a container (a metrics page on plain HTTP, say)."""
    command = host.run("python3 -c %s %s %s %s", HTTP, url, body, login)
    assert command.rc == 0, command.stderr
    return str(command.stdout)


def metrics(host: Host, url: str, client: str | None = None) -> str:
    """A metrics document over mutual TLS from inside `host`, showing `client`'s certificate (a path
    without extension) when given; "refused: ..." when the endpoint would not answer."""
    return str(
        host.check_output("python3 -c %s %s" + " %s" * bool(client), METRICS, url, *filter(None, [client]))
    )


def assert_answers_prometheus_only(host: Host, target: str) -> None:
    """The metrics endpoint at `target` (host:port), asked from `host`: plain HTTP and HTTPS without a
    client certificate are refused; Prometheus's certificate is answered."""
    plain = metrics(host, f"http://{target}/metrics")
    assert plain.startswith("refused:"), plain[:200]
    anonymous = metrics(host, f"https://{target}/metrics")
    assert anonymous.startswith("refused:"), anonymous[:200]
    assert "# TYPE " in metrics(host, f"https://{target}/metrics", PROMETHEUS_CLIENT)


def journal(host: Host, unit: str) -> str:
    """The unit's last journal lines, to print beside a failed service assertion."""
    return str(host.run("journalctl -u %s --no-pager -n 50", unit).stdout)


def assert_unit_running(host: Host, unit: str) -> None:
    service = host.service(unit)
    assert service.is_running, f"{unit} is not running:\n{journal(host, unit)}"
    assert service.is_enabled, f"{unit} is not enabled at boot"


# Each service its own system user (roles/exporters/tasks/users.yml, roles/alertmanager); Prometheus keeps
# Debian's prometheus. Both Redis exporters hold the same password and share one user.
UNIT_USERS = {
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-redis-exporter": "prometheus-redis-exporter",
    "prometheus-redis-exporter-sentinel": "prometheus-redis-exporter",
}
# The secrets each of those users reads through its group, and no other of them may.
SECRETS = {
    "prometheus": [f"{PROMETHEUS_CLIENT}.key", "/etc/prometheus/web.yml"],
    "prometheus-alertmanager": ["/etc/prometheus/alertmanager.yml", "/etc/prometheus/alertmanager-web.yml"],
    "prometheus-node-exporter": ["/etc/quantum/tls/prometheus-node-exporter/metrics.key"],
    "prometheus-redis-exporter": [
        "/etc/quantum/tls/prometheus-redis-exporter/metrics.key",
        "/etc/default/prometheus-redis-exporter.passwords.json",
        "/etc/default/prometheus-redis-exporter-sentinel.passwords.json",
    ],
}


def assert_runs_as_its_own_user(host: Host, unit: str) -> None:
    """The unit names its user and its running process is that user's."""
    user = UNIT_USERS[unit]
    assert host.check_output("systemctl show -p User --value %s", unit) == user
    pid = host.check_output("systemctl show -p MainPID --value %s", unit)
    assert pid != "0", f"{unit} is not running:\n{journal(host, unit)}"
    assert host.check_output("ps -o user:40= -p %s", pid) == user


def secret_readers(host: Host) -> dict[str, set[str]]:
    """For each secret on this host, which of the service users can read it (a real `cat` as each)."""
    users = [user for user in SECRETS if host.user(user).exists]
    return {
        path: {user for user in users if host.run("runuser -u %s -- cat %s", user, path).rc == 0}
        for paths in SECRETS.values()
        for path in paths
        if host.file(path).exists
    }


def assert_each_secret_is_its_owners_only(host: Host, owners: set[str]) -> None:
    """Every secret of `owners` is on this host, and each secret here is readable by its own user only."""
    readers = secret_readers(host)
    expected = {path: {user} for user, paths in SECRETS.items() for path in paths if path in readers}
    assert {user for paths in expected.values() for user in paths} == owners, readers
    assert readers == expected
