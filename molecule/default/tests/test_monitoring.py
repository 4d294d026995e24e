"""Prometheus has loaded the rules and scrapes every target, the apply layer's included."""

from typing import Any

from conftest import http_json, http_text, wait_for
from testinfra.host import Host

JOBS = {"apply_layer", "node", "redis", "prometheus", "alertmanager"}


def test_rules_are_loaded(host: Host) -> None:
    groups = http_json(host, "http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]
    files = {group["file"].rsplit("/", 1)[-1] for group in groups}
    assert {"prometheus_alert_rules.yml", "prometheus_recording_rules.yml"} <= files
    assert all(group["rules"] for group in groups)


def test_every_target_is_up(host: Host) -> None:
    def targets() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = http_json(host, "http://127.0.0.1:9090/api/v1/targets")["data"][
            "activeTargets"
        ]
        return active

    def all_up() -> bool:
        current = targets()
        return {t["labels"]["job"] for t in current} >= JOBS and all(t["health"] == "up" for t in current)

    assert wait_for(all_up), [(t["labels"]["job"], t["health"], t.get("lastError")) for t in targets()]


def test_apply_layer_exports_build_info(host: Host) -> None:
    assert "apply_build_info{" in http_text(host, "http://127.0.0.1:8000/metrics")
