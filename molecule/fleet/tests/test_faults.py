"""Faults on the deployed fleet, each while plans flow: Redis stopped, an apply host cut off the network,
an apply service killed with SIGKILL, the plan stream flooded with malformed entries. Each test prints
what was tried, lost and duplicated (`-s`); the goal, and the assertion, is nothing lost, nothing twice.

The tests leave the fleet as they found it (Redis running, network joined, switch off), so the tests
after them run on a healthy fleet.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

from conftest import (
    APPLY_HOSTS,
    CORE,
    EMULATOR,
    PlansInBackground,
    Results,
    http_json,
    kill_switch_play,
    metrics,
    orders,
    orders_by_plan,
    plan_outcomes,
    plans_script,
    prometheus_api,
    send_plans,
    wait_for,
)
from quantum_apply_layer.sample_plans import MALFORMED, changed, minimal_plan
from testinfra.host import Host

APPLY_UNIT = "quantum-apply-layer"
NETWORK = "qh-fleet"
# What ops/prometheus_alert_rules.yml fires while Redis is down (each `for: 1m`), by (alert, instance).
REDIS_DOWN_ALERTS = {("RedisDown", f"{CORE}:9121")} | {
    ("ApplyLayerRedisUnreachable", f"{name}:8000") for name in APPLY_HOSTS
}
# Over mutual TLS, shown the endpoint's own certificate (the role's health check does the same).
APPLY_METRICS = "https://127.0.0.1:8000/metrics"
APPLY_METRICS_CERT = "/etc/quantum/tls/apply-layer/metrics"
KILLS = 3
# The fleet's apply_layer_auto_trip_dead_letters_per_min and APPLY_AUTO_TRIP_CHECKS (one check a second).
DEAD_LETTERS_PER_MIN = 30
AUTO_TRIP_CHECKS = 3
# Copies of each, written at once: well over the dead letters a minute that trip the fleet.
MALFORMED_COPIES = 5


def report(fault: str, **figures: object) -> None:
    print(f"\nFAULT {fault}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))


def lost_and_duplicated(results: Results, ordered: dict[str, int]) -> tuple[list[str], list[str]]:
    """Lost: no result entry, or `executed` with no order at the emulators. Duplicated: more than one
    result entry, or more than one order."""
    lost = [
        plan_id
        for plan_id, found in results.items()
        if not found or (found[0]["status"] == "executed" and not ordered.get(plan_id))
    ]
    duplicated = [
        plan_id for plan_id, found in results.items() if len(found) > 1 or ordered.get(plan_id, 0) > 1
    ]
    return lost, duplicated


def statuses(results: Results) -> set[str]:
    return {result["status"] for found in results.values() for result in found}


def unit_restarts(host: Host) -> int:
    return int(host.check_output("systemctl show -p NRestarts --value %s", APPLY_UNIT))


def firing_alerts(core: Host) -> set[tuple[str, str]]:
    alerts = prometheus_api(core, "alerts")["data"]["alerts"]
    return {
        (alert["labels"]["alertname"], alert["labels"].get("instance", ""))
        for alert in alerts
        if alert["state"] == "firing"
    }


def reaches_redis(host: Host) -> bool:
    """The apply layer's own view: its last Redis command went through (apply_redis_up)."""
    return "\napply_redis_up 1.0\n" in metrics(host, APPLY_METRICS, APPLY_METRICS_CERT)


def docker(*args: str) -> None:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)  # noqa: S603, S607
    assert done.returncode == 0, done.stderr


def global_switch(host: Host) -> dict[str, str]:
    status = json.loads(host.check_output("quantum-apply-layer status --json"))
    switch: dict[str, str] = status["switch"]["global"]
    return switch


def test_redis_stopped_while_plans_flow(core: Host, apply_hosts: dict[str, Host]) -> None:
    restarts = {name: unit_restarts(host) for name, host in apply_hosts.items()}
    fired_after: dict[str, float] = {}
    with PlansInBackground(apply_hosts, "redis", 60) as plans:
        assert plans.wait_until_flowing(), plans.results()
        stop = core.run("systemctl stop redis-server")
        assert stop.rc == 0, stop.stderr
        stopped = time.monotonic()
        try:
            orders_at_stop = len(orders(apply_hosts))

            def all_firing() -> bool:
                for alert, instance in firing_alerts(core) & REDIS_DOWN_ALERTS:
                    fired_after.setdefault(f"{alert}@{instance}", round(time.monotonic() - stopped, 1))
                return len(fired_after) == len(REDIS_DOWN_ALERTS)

            # Pending is not enough: each rule must have held for its `for:` and fire.
            alerts_fired = wait_for(all_firing, timeout_s=240)
            sent_while_down = len(orders(apply_hosts)) - orders_at_stop
            stayed_up = {name: host.service(APPLY_UNIT).is_running for name, host in apply_hosts.items()}
        finally:
            start = core.run("systemctl start redis-server")
        outage_s = time.monotonic() - stopped
        started = time.monotonic()
        assert start.rc == 0, start.stderr
        written = plans.finish()
        results = plans.settled_results(timeout_s=120)
    all_orders = orders(apply_hosts)
    # The emulators stamp orders with the monotonic clock, which the containers share with this host.
    first_order_after = min(
        (order["receivedMonotonic"] for order in all_orders if order["receivedMonotonic"] > started),
        default=float("nan"),
    )
    ordered = orders_by_plan(apply_hosts)
    lost, duplicated = lost_and_duplicated(results, ordered)
    report(
        "Redis stopped",
        outage_s=round(outage_s, 1),
        plans_tried=len(results),
        writes_refused_while_down=written["refused"],
        orders_while_down=sent_while_down,
        alerts_firing_after_s=fired_after,
        first_order_after_restart_s=round(first_order_after - started, 2),
        lost=len(lost),
        duplicated=len(duplicated),
    )

    assert alerts_fired, f"firing after: {fired_after}, expected {sorted(REDIS_DOWN_ALERTS)}"
    assert sent_while_down == 0
    assert written["refused"] > 0, "the writer met no outage: the fault struck after the plans"
    assert stayed_up == dict.fromkeys(APPLY_HOSTS, True)
    assert {name: unit_restarts(host) for name, host in apply_hosts.items()} == restarts
    assert (lost, duplicated) == ([], []), results
    assert statuses(results) == {"executed"}, results
    assert {plan_id: ordered.get(plan_id, 0) for plan_id in results} == dict.fromkeys(results, 1)


def sent_before_the_cut_then_taken_over(
    apply_hosts: dict[str, Host], cut_host: str, cut: float, results: Results
) -> list[str]:
    """Plans the cut host ordered at its own emulator before the cut, with one result recorded by the
    other host, which also ordered them once at its own emulator. The cut host could not record its
    result; the other host took the plan over and looked the order up by its client id, as it must, but
    at its own emulator: the fleet has one emulator per host, not one exchange. Against one exchange the
    lookup finds the order and nothing is sent twice (inventories/fleet/README.md, "Known limit"). Any
    other second order is a duplicate."""
    by_host = {name: orders_by_plan({name: host}) for name, host in apply_hosts.items()}
    other = next(name for name in apply_hosts if name != cut_host)
    before_cut = {
        order["clientOrderId"].removeprefix("qh-").rsplit("-", 1)[0]
        for order in http_json(apply_hosts[cut_host], f"{EMULATOR}/orders")["orders"]
        if order["receivedMonotonic"] < cut
    }
    return sorted(
        plan_id
        for plan_id, found in results.items()
        if plan_id in before_cut
        and len(found) == 1
        and found[0]["consumer"] == other
        and by_host[cut_host].get(plan_id) == 1
        and by_host[other].get(plan_id) == 1
    )


def test_apply_host_cut_off_the_network(apply_hosts: dict[str, Host]) -> None:
    cut_host = APPLY_HOSTS[1]
    with PlansInBackground(apply_hosts, "netcut", 60) as plans:
        assert plans.wait_until_flowing(), plans.results()
        docker("network", "disconnect", NETWORK, cut_host)
        cut = time.monotonic()
        try:
            plans.finish()
            # Plans the cut host had read are taken over once idle for APPLY_RECLAIM_IDLE_MS (30 s).
            resolved_while_cut = wait_for(lambda: all(plans.results().values()), timeout_s=180)
            cut_s = time.monotonic() - cut
        finally:
            docker("network", "connect", NETWORK, cut_host)
        results = plans.settled_results(timeout_s=60)
    ordered = orders_by_plan(apply_hosts)
    lost, duplicated = lost_and_duplicated(results, ordered)
    taken_over = sent_before_the_cut_then_taken_over(apply_hosts, cut_host, cut, results)
    duplicated = [plan_id for plan_id in duplicated if plan_id not in taken_over]
    rejoined = wait_for(lambda: reaches_redis(apply_hosts[cut_host]), timeout_s=60, every_s=1)
    after = send_plans(apply_hosts, 20)
    report(
        f"{cut_host} cut off the network",
        cut_s=round(cut_s, 1),
        plans_tried=len(results),
        recorded_by={
            host: sum(found[0]["consumer"] == host for found in results.values() if found)
            for host in APPLY_HOSTS
        },
        lost=len(lost),
        duplicated=len(duplicated),
        sent_before_the_cut_then_taken_over=taken_over,
    )

    assert resolved_while_cut, results
    assert (lost, duplicated) == ([], []), results
    assert statuses(results) == {"executed"}, results
    expected = {plan_id: 2 if plan_id in taken_over else 1 for plan_id in results}
    assert {plan_id: ordered.get(plan_id, 0) for plan_id in results} == expected
    # Rejoined, it takes its share again.
    assert rejoined
    assert {len(found) for found in after.values()} == {1}, after
    assert {found[0]["consumer"] for found in after.values()} == set(APPLY_HOSTS), after


def test_apply_service_killed_while_plans_flow(apply_hosts: dict[str, Host]) -> None:
    victim_name = APPLY_HOSTS[1]
    victim = apply_hosts[victim_name]
    restarts = unit_restarts(victim)
    kills_while_writing = 0
    with PlansInBackground(apply_hosts, "kill9", 100) as plans:
        assert plans.wait_until_flowing(), plans.results()
        for kill in range(1, KILLS + 1):
            kills_while_writing += int(plans.writing)
            victim.run("systemctl kill -s KILL %s", APPLY_UNIT)
            restarted = wait_for(
                lambda kill=kill: (
                    unit_restarts(victim) == restarts + kill and victim.service(APPLY_UNIT).is_running
                ),
                timeout_s=60,
                every_s=1,
            )
            assert restarted, victim.run("journalctl -u %s -n 30 --no-pager", APPLY_UNIT).stdout
        plans.finish()
        results = plans.settled_results(timeout_s=120)
    ordered = orders_by_plan(apply_hosts)
    lost, duplicated = lost_and_duplicated(results, ordered)
    report(
        f"SIGKILL of {APPLY_UNIT} on {victim_name}",
        kills=KILLS,
        kills_while_writing=kills_while_writing,
        restarts_by_systemd=unit_restarts(victim) - restarts,
        plans_tried=len(results),
        lost=len(lost),
        duplicated=len(duplicated),
    )

    assert kills_while_writing >= 1
    assert (lost, duplicated) == ([], []), results
    assert statuses(results) == {"executed"}, results
    assert {plan_id: ordered.get(plan_id, 0) for plan_id in results} == dict.fromkeys(results, 1)


def malformed_entries(prefix: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Every malformed case MALFORMED_COPIES times, by `fault_case`: a field the validator ignores and
    the dead-letter stream keeps, which finds each entry again. Values: (expected reason, fields)."""
    entries = {}
    for copy in range(MALFORMED_COPIES):
        for number, (reason, change) in enumerate(MALFORMED):
            case = f"{prefix}-{copy}-{number}"
            entries[case] = (reason, changed({**minimal_plan(case), "fault_case": case}, change))
    return entries


def flood_outcomes(
    apply_hosts: dict[str, Host], prefix: str, cases: list[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """By fault_case: the dead letters' reasons, and the statuses of the result entries."""
    outcomes = plan_outcomes(apply_hosts, prefix)
    reasons: dict[str, list[str]] = {case: [] for case in cases}
    for letter in outcomes["dead_letters"]:
        reasons[letter["fault_case"]].append(letter["dlq_reason"])
    recorded: dict[str, list[str]] = {case: [] for case in cases}
    for result in outcomes["results"]:
        recorded[outcomes["plans"][result["entry_id"]]["fault_case"]].append(result["status"])
    return reasons, recorded


def test_plan_stream_flooded_with_malformed_entries(apply_hosts: dict[str, Host]) -> None:
    reader = apply_hosts[APPLY_HOSTS[0]]
    orders_before = len(orders(apply_hosts))
    with PlansInBackground(apply_hosts, "flood", 40) as plans:
        assert plans.wait_until_flowing(), plans.results()
        flood_prefix = f"{plans.prefix}-bad"
        entries = malformed_entries(flood_prefix)
        plans_script(reader, "send-entries", json.dumps([fields for _reason, fields in entries.values()]))
        flood_handled = time.monotonic()
        try:
            all_dead_lettered = wait_for(
                lambda: all(
                    all(found.values()) for found in flood_outcomes(apply_hosts, flood_prefix, [*entries])
                ),
                timeout_s=120,
            )
            flood_handled = time.monotonic()
            plans.finish()
            results = plans.settled_results(timeout_s=60)
            reasons, recorded = flood_outcomes(apply_hosts, flood_prefix, [*entries])
            tripped = wait_for(
                lambda: global_switch(reader)["reason"].startswith("auto-trip: dead_letters"),
                timeout_s=30,
                every_s=1,
            )
        finally:
            # The auto-trip counts the dead letters of the last minute: resuming sooner trips it again.
            time.sleep(max(0.0, 60 + AUTO_TRIP_CHECKS - (time.monotonic() - flood_handled)))
            switched_off = kill_switch_play(kill_switch="off", reason="molecule fleet: malformed flood over")
    assert switched_off.returncode == 0, switched_off.stdout + switched_off.stderr
    time.sleep(AUTO_TRIP_CHECKS + 2)  # long enough for the auto-trip to halt again, if it were to
    resumed = global_switch(reader)["state"]
    ordered = orders_by_plan(apply_hosts)
    lost, duplicated = lost_and_duplicated(results, ordered)
    wrong_reasons = {
        case: found
        for case, found in reasons.items()
        if [reason.split(":", 1)[0] for reason in found] != [entries[case][0]]
    }
    report(
        "plan stream flooded with malformed entries",
        malformed_written=len(entries),
        dead_lettered=sum(map(len, reasons.values())),
        dead_letter_results=sum(found == ["dead_letter"] for found in recorded.values()),
        good_plans_tried=len(results),
        good_plans_by_status=Counter(found[0]["status"] for found in results.values() if found),
        auto_tripped=tripped,
        lost=len(lost),
        duplicated=len(duplicated),
    )

    assert all_dead_lettered
    assert wrong_reasons == {}
    assert {case: found for case, found in recorded.items() if found != ["dead_letter"]} == {}
    # The flood is over the fleet's limit: it halted itself, and stays resumed once the minute is over.
    assert len(entries) > DEAD_LETTERS_PER_MIN
    assert tripped
    assert resumed == "running"
    # Good plans around the flood: each recorded once, executed before the trip and halted after it.
    assert (lost, duplicated) == ([], []), results
    assert statuses(results) <= {"executed", "halted"}, results
    assert {plan_id: ordered.get(plan_id, 0) for plan_id in results} == {
        plan_id: int(found[0]["status"] == "executed") for plan_id, found in results.items()
    }
    # Not one malformed entry reached an emulator (a long plan_id would not even show in its order id).
    assert len(orders(apply_hosts)) - orders_before == sum(ordered.get(plan_id, 0) for plan_id in results)
