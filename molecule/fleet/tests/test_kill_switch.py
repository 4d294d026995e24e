"""Plans are shared by both apply hosts, each executed once; one kill_switch.yml run halts them both."""

from collections import Counter

from conftest import APPLY_HOSTS, kill_switch_play, orders_by_plan, send_plans
from testinfra.host import Host

PLANS = 20


def test_plans_are_shared_and_each_executed_once(apply_hosts: dict[str, Host]) -> None:
    plans = send_plans(apply_hosts, PLANS)
    orders = orders_by_plan(apply_hosts)

    assert {plan_id: len(results) for plan_id, results in plans.items()} == dict.fromkeys(plans, 1)
    assert {results[0]["status"] for results in plans.values()} == {"executed"}, plans
    assert {results[0]["consumer"] for results in plans.values()} == set(APPLY_HOSTS), plans
    assert {plan_id: orders.get(plan_id, 0) for plan_id in plans} == dict.fromkeys(plans, 1)


def test_one_kill_switch_run_halts_both_apply_hosts(apply_hosts: dict[str, Host]) -> None:
    orders_before = sum(orders_by_plan(apply_hosts).values())
    switched_on = kill_switch_play(kill_switch="on", reason="molecule fleet: halt every apply host")
    assert switched_on.returncode == 0, switched_on.stdout + switched_on.stderr
    try:
        for host in apply_hosts.values():
            assert "kill switch (global): halted" in host.check_output("quantum-apply-layer status")
        plans = send_plans(apply_hosts, PLANS)
        orders = orders_by_plan(apply_hosts)
    finally:
        switched_off = kill_switch_play(kill_switch="off", reason="molecule fleet: resume")
    assert switched_off.returncode == 0, switched_off.stdout + switched_off.stderr

    statuses = Counter(result["status"] for results in plans.values() for result in results)
    assert statuses == Counter({"halted": PLANS}), plans
    assert {results[0]["consumer"] for results in plans.values()} == set(APPLY_HOSTS), plans
    assert sum(orders.values()) == orders_before
    assert not set(plans) & set(orders)
