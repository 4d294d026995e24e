"""The fleet's hosts (reached with `docker exec`) and helpers shared by its tests."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from scenario_helpers import RELEASE_PYTHON, http_json, kill_switch_play, metrics, wait_for
from testinfra.host import Host

# scenario_helpers: shared with the other scenarios (molecule/shared, on PYTHONPATH from
# .config/molecule/config.yml), re-exported for this scenario's test files.
__all__ = [
    "APPLY_HOSTS",
    "CORE",
    "RELEASE_PYTHON",
    "PlansInBackground",
    "Results",
    "http_json",
    "kill_switch_play",
    "metrics",
    "orders",
    "orders_by_plan",
    "plan_outcomes",
    "plans_script",
    "prometheus_api",
    "send_plans",
    "wait_for",
    "web_logins",
]

CORE = "qh-fleet-core"
APPLY_HOSTS = ("qh-fleet-apply-1", "qh-fleet-apply-2")
EMULATOR = "http://127.0.0.1:8090/_emulator"
PLANS = (Path(__file__).parent / "fleet_plans.py").read_text()
# Room for 100 closes of 0.01 on each emulator, however the plans are shared between the two hosts.
POSITION = {"BTCUSDT": 1.0}

Results = dict[str, list[dict[str, str]]]
# The scenario's web logins on Prometheus and Alertmanager (test-only secrets, inventory/hosts.yml).
MONITORING_VARS = yaml.safe_load((Path(__file__).parents[1] / "inventory/hosts.yml").read_text())[
    "quantum_monitoring"
]["vars"]


@pytest.fixture(scope="session")
def core() -> Host:
    return testinfra.get_host(f"docker://{CORE}")


@pytest.fixture(scope="session")
def apply_hosts() -> dict[str, Host]:
    return {name: testinfra.get_host(f"docker://{name}") for name in APPLY_HOSTS}


def web_logins() -> dict[str, str]:
    """user -> "user:password" for each web user of Prometheus and Alertmanager."""
    return {user: f"{user}:{password}" for user, password in MONITORING_VARS["prometheus_web_users"].items()}


def prometheus_api(core: Host, path: str) -> Any:
    """Prometheus's API on the core host, logged in as Prometheus's own web user."""
    return http_json(core, f"http://127.0.0.1:9090/api/v1/{path}", login=web_logins()["prometheus"])


def orders(apply_hosts: dict[str, Host]) -> list[dict[str, Any]]:
    """Every order the emulators received, in arrival order per emulator."""
    return [
        order for host in apply_hosts.values() for order in http_json(host, f"{EMULATOR}/orders")["orders"]
    ]


def orders_by_plan(apply_hosts: dict[str, Host]) -> dict[str, int]:
    """Orders every emulator received, counted by the plan in their client order id (qh-<plan>-<step>)."""
    counts: dict[str, int] = {}
    for order in orders(apply_hosts):
        plan_id = order["clientOrderId"].removeprefix("qh-").rsplit("-", 1)[0]
        counts[plan_id] = counts.get(plan_id, 0) + 1
    return counts


def open_positions(apply_hosts: dict[str, Host]) -> None:
    for host in apply_hosts.values():
        http_json(host, f"{EMULATOR}/positions", POSITION)


def new_prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def plans_script(host: Host, *args: str) -> Any:
    """fleet_plans.py with `args` on `host`, its JSON answer."""
    result = host.run(f"{RELEASE_PYTHON} -c %s" + " %s" * len(args), PLANS, *args)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def plan_outcomes(apply_hosts: dict[str, Host], prefix: str) -> dict[str, Any]:
    """The plan entries written under `prefix`, their result entries and their dead letters."""
    outcomes: dict[str, Any] = plans_script(apply_hosts[APPLY_HOSTS[0]], "outcomes", prefix)
    return outcomes


def results_by_plan(apply_hosts: dict[str, Host], prefix: str, plan_ids: list[str]) -> Results:
    found: Results = {plan_id: [] for plan_id in plan_ids}
    for result in plan_outcomes(apply_hosts, prefix)["results"]:
        if result["plan_id"] in found:
            found[result["plan_id"]].append(result)
    return found


def settled_results(
    apply_hosts: dict[str, Host], prefix: str, plan_ids: list[str], timeout_s: float
) -> Results:
    """Once every plan has a result (bounded wait), read again a little later, so that a second result
    for a plan would be seen too."""
    wait_for(lambda: all(results_by_plan(apply_hosts, prefix, plan_ids).values()), timeout_s, every_s=1)
    time.sleep(3)
    return results_by_plan(apply_hosts, prefix, plan_ids)


def send_plans(apply_hosts: dict[str, Host], count: int) -> Results:
    """A position on every emulator, then `count` plans written once (from the first apply host)."""
    open_positions(apply_hosts)
    prefix = new_prefix("fleet")
    plans_script(apply_hosts[APPLY_HOSTS[0]], "send", prefix, str(count), "0.1")
    return settled_results(apply_hosts, prefix, [f"{prefix}-{number}" for number in range(count)], 60)


class PlansInBackground:
    """`count` plans written from the first apply host while the test goes on (a `docker exec` run
    from the controller), so that a fault can strike while plans flow."""

    def __init__(self, apply_hosts: dict[str, Host], name: str, count: int, every_s: float = 0.2) -> None:
        open_positions(apply_hosts)
        self.prefix = new_prefix(name)
        self.plan_ids = [f"{self.prefix}-{number}" for number in range(count)]
        self._apply_hosts = apply_hosts
        command = ["docker", "exec", APPLY_HOSTS[0], RELEASE_PYTHON, "-c", PLANS]
        self._writer = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [*command, "send", self.prefix, str(count), str(every_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> PlansInBackground:
        return self

    def __exit__(self, *_: object) -> None:
        if self._writer.poll() is None:  # the test failed first: stop waiting for the writer
            self._writer.kill()
            self._writer.communicate()

    @property
    def writing(self) -> bool:
        return self._writer.poll() is None

    def results(self) -> Results:
        return results_by_plan(self._apply_hosts, self.prefix, self.plan_ids)

    def wait_until_flowing(self) -> bool:
        """A few plans executed: the fault strikes while plans flow, not before they start."""
        return wait_for(lambda: sum(map(bool, self.results().values())) >= 5, timeout_s=60, every_s=1)

    def finish(self, timeout_s: float = 360) -> dict[str, int]:
        """The writer's own report, once it has written every plan: {"written": .., "refused": ..}."""
        stdout, stderr = self._writer.communicate(timeout=timeout_s)
        assert self._writer.returncode == 0, stderr
        report: dict[str, int] = json.loads(stdout)
        return report

    def settled_results(self, timeout_s: float) -> Results:
        return settled_results(self._apply_hosts, self.prefix, self.plan_ids, timeout_s)
