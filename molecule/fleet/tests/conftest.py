"""The fleet's hosts (reached with `docker exec`) and helpers shared by its tests."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.host import Host

# Helpers shared with the other scenarios' tests, re-exported for this scenario's test files.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from scenario_helpers import RELEASE_PYTHON, kill_switch_play, wait_for

__all__ = [
    "APPLY_HOSTS",
    "CORE",
    "RELEASE_PYTHON",
    "http_json",
    "kill_switch_play",
    "orders_by_plan",
    "send_plans",
    "wait_for",
]

CORE = "qh-fleet-core"
APPLY_HOSTS = ("qh-fleet-apply-1", "qh-fleet-apply-2")
EMULATOR = "http://127.0.0.1:8090/_emulator"
PLANS = (Path(__file__).parent / "fleet_plans.py").read_text()
# curl is not in the image: python3's urllib, with an optional JSON body (then it is a POST).
HTTP = (
    "import json,sys,urllib.request; body=sys.argv[2].encode() if len(sys.argv)>2 else None; "
    "request=urllib.request.Request(sys.argv[1], data=body, headers={'Content-Type': 'application/json'}); "
    "print(urllib.request.urlopen(request, timeout=5).read().decode())"
)


@pytest.fixture(scope="session")
def core() -> Host:
    return testinfra.get_host(f"docker://{CORE}")


@pytest.fixture(scope="session")
def apply_hosts() -> dict[str, Host]:
    return {name: testinfra.get_host(f"docker://{name}") for name in APPLY_HOSTS}


def http_json(host: Host, url: str, body: Any = None) -> Any:
    """GET (or POST `body`) from inside a container: the services listen on its loopback."""
    args = [HTTP, url, *([json.dumps(body)] if body is not None else [])]
    command = host.run("python3 -c" + " %s" * len(args), *args)
    assert command.rc == 0, command.stderr
    return json.loads(command.stdout)


def orders_by_plan(apply_hosts: dict[str, Host]) -> dict[str, int]:
    """Orders every emulator received, counted by the plan in their client order id (qh-<plan>-<step>)."""
    counts: dict[str, int] = {}
    for host in apply_hosts.values():
        for order in http_json(host, f"{EMULATOR}/orders")["orders"]:
            plan_id = order["clientOrderId"].removeprefix("qh-").rsplit("-", 1)[0]
            counts[plan_id] = counts.get(plan_id, 0) + 1
    return counts


def send_plans(apply_hosts: dict[str, Host], count: int) -> dict[str, list[dict[str, str]]]:
    """A position on every emulator, then `count` plans written once (from the first apply host)."""
    for host in apply_hosts.values():
        http_json(host, f"{EMULATOR}/positions", {"BTCUSDT": 0.5})
    writer = apply_hosts[APPLY_HOSTS[0]]
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    result = writer.run(f"{RELEASE_PYTHON} - {prefix} {count} <<'PLANS'\n{PLANS}\nPLANS")
    assert result.rc == 0, result.stderr
    plans: dict[str, list[dict[str, str]]] = json.loads(result.stdout)
    return plans
