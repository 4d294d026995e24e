"""The host firewall seen from the network, with real connection attempts.

From a container on the fleet's network that is in no inventory group (an attacker on the private
network, or the internet in front of a VPS), every service port of every host is filtered (dropped: no
answer at all) and the SSH port is not (it answers, even where no sshd runs: refused, not dropped).
From the group that needs a port, it is open.
"""

import json
import subprocess

from conftest import APPLY_HOSTS, CORE
from testinfra.host import Host

IMAGE = "quantum-hygiene/debian12-systemd:bookworm"
NETWORK = "qh-fleet"
# open: accepted; refused: a RST, so the firewall let the packet through; filtered: no answer (dropped).
PROBE = """
import json, socket, sys
result = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        result[target] = "open"
    except ConnectionRefusedError:
        result[target] = "refused"
    except OSError:
        result[target] = "filtered"
print(json.dumps(result))
"""
CORE_PORTS = (6379, 9100, 9121, 9090, 9093)
APPLY_PORTS = (8000, 8090)


def from_outside(*targets: str) -> dict[str, str]:
    """Connect from a throwaway container that joins the fleet's network but no inventory group."""
    reply = subprocess.run(  # noqa: S603 - fixed argv
        ["docker", "run", "--rm", "--network", NETWORK, IMAGE, "python3", "-c", PROBE, *targets],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(reply.stdout))


def from_host(host: Host, *targets: str) -> dict[str, str]:
    return dict(json.loads(host.check_output("python3 -c %s" + " %s" * len(targets), PROBE, *targets)))


def test_every_service_port_is_closed_to_a_host_outside_the_inventory() -> None:
    targets = [f"{CORE}:{port}" for port in CORE_PORTS]
    targets += [f"{name}:{port}" for name in APPLY_HOSTS for port in APPLY_PORTS]
    assert from_outside(*targets) == dict.fromkeys(targets, "filtered")


def test_ssh_answers_a_host_outside_the_inventory() -> None:
    targets = [f"{name}:22" for name in (CORE, *APPLY_HOSTS)]
    assert set(from_outside(*targets).values()) <= {"open", "refused"}


def test_apply_hosts_reach_redis_and_nothing_else_on_the_core(apply_hosts: dict[str, Host]) -> None:
    for host in apply_hosts.values():
        seen = from_host(host, f"{CORE}:6379", f"{CORE}:9100", f"{CORE}:9121")
        assert seen == {f"{CORE}:6379": "open", f"{CORE}:9100": "filtered", f"{CORE}:9121": "filtered"}


def test_prometheus_reaches_the_apply_layer_metrics_but_apply_hosts_not_each_other(
    core: Host, apply_hosts: dict[str, Host]
) -> None:
    assert from_host(core, *(f"{name}:8000" for name in APPLY_HOSTS)) == dict.fromkeys(
        (f"{name}:8000" for name in APPLY_HOSTS), "open"
    )
    first, second = APPLY_HOSTS
    assert from_host(apply_hosts[first], f"{second}:8000") == {f"{second}:8000": "filtered"}
