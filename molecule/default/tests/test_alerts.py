"""An alert that fires for real reaches the lab's receiver, with its runbook link.

The switch is set to a value outside the contract's table, as a typo by hand would (`redis-cli SET`, as
the operator's Redis user): the apply layer halts and reports it invalid, Prometheus fires
ApplyLayerKillSwitchInvalid (no `for`), and Alertmanager sends it to the webhook after its group wait.
"""

import json
import time

from conftest import wait_for
from testinfra.host import Host

SWITCH = "quantum:global:kill_switch"
STORE = "/var/lib/quantum-alert-receiver/alerts.jsonl"
ALERT = "ApplyLayerKillSwitchInvalid"
# How long the notification may take: the alert's `for` (0) plus Alertmanager's group_wait (30 s,
# ops/alertmanager.yml.j2), plus one scrape and one evaluation (15 s each in the lab) and the apply
# layer's one-second switch check, with room for a loaded machine. A bound on waiting, not a benchmark.
ARRIVAL_BOUND_S = 0 + 30 + 15 + 15 + 1 + 60


def operator_cli(host: Host, *command: str) -> str:
    variables = host.ansible.get_variables()
    user = variables.get("redis_operator_user", "operator")
    result = host.run(
        "env REDISCLI_AUTH=%s redis-cli --user %s --no-auth-warning" + " %s" * len(command),
        variables["redis_operator_password"],
        user,
        *command,
    )
    return str(result.stdout + result.stderr).strip()


def notifications(host: Host) -> list[dict[str, object]]:
    if not host.file(STORE).exists:
        return []
    return [json.loads(line) for line in host.check_output("cat %s", STORE).splitlines() if line]


def firing(host: Host) -> list[dict[str, object]]:
    return [
        alert
        for notification in notifications(host)
        for alert in notification["body"]["alerts"]  # type: ignore[index]
        if alert["labels"]["alertname"] == ALERT and alert["status"] == "firing"
    ]


def test_a_firing_alert_arrives_at_the_receiver_with_its_runbook(host: Host) -> None:
    assert not firing(host), "the alert was already firing before the test set the switch"
    assert operator_cli(host, "SET", SWITCH, "halt-typo") == "OK"
    started = time.monotonic()
    try:
        arrived = wait_for(lambda: bool(firing(host)), timeout_s=ARRIVAL_BOUND_S, every_s=2)
        print(f"{ALERT} reached the receiver {time.monotonic() - started:.1f} s after the SET")
    finally:
        assert operator_cli(host, "DEL", SWITCH) == "1"
    assert arrived, f"no {ALERT} notification within {ARRIVAL_BOUND_S} s: {notifications(host)}"
    alert = firing(host)[0]
    assert alert["annotations"]["runbook_url"] == f"ops/runbooks/{ALERT}.md"  # type: ignore[index]
