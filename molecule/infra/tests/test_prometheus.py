"""Prometheus has loaded the rules and scrapes every job; the Redis exporter reaches Redis; Prometheus and
Alertmanager answer only a web user."""

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from infra_helpers import (
    PROMETHEUS,
    URL_READER,
    http_json,
    http_status,
    http_text,
    prometheus_targets,
    web_login,
)
from scenario_helpers import http_json as http_post_json
from scenario_helpers import wait_for
from testinfra.host import Host

ALERTMANAGER = "http://127.0.0.1:9093"

JOBS_UP = {"node", "redis", "prometheus", "alertmanager"}


def test_every_rule_group_is_loaded(host: Host) -> None:
    on_disk = {
        group["name"]
        for path in host.file("/etc/prometheus/rules").listdir()
        for group in yaml.safe_load(host.file(f"/etc/prometheus/rules/{path}").content_string)["groups"]
    }
    loaded = {group["name"] for group in http_json(host, f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]}
    assert on_disk
    assert loaded == on_disk


def test_jobs_are_up_and_labelled_with_env(host: Host) -> None:
    targets = prometheus_targets(host, JOBS_UP)
    health = {target["labels"]["job"]: target["health"] for target in targets}
    # Nothing serves the apply layer in this scenario: its job exists and reads down.
    assert health == {**dict.fromkeys(JOBS_UP, "up"), "apply_layer": "down"}
    assert {target["labels"]["env"] for target in targets} == {"lab"}


def test_redis_exporter_authenticates(host: Host) -> None:
    assert "redis_up 1" in http_text(host, "https://127.0.0.1:9121/metrics").splitlines()


def test_alertmanager_is_ready_and_wired(host: Host) -> None:
    assert http_text(host, "http://127.0.0.1:9093/-/ready").strip() == "OK"
    alertmanagers = http_json(host, f"{PROMETHEUS}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [am["url"] for am in alertmanagers] == ["http://127.0.0.1:9093/api/v2/alerts"]


@pytest.mark.parametrize("url", [f"{PROMETHEUS}/api/v1/targets", "http://127.0.0.1:9093/api/v2/status"])
def test_web_api_answers_only_a_web_user(host: Host, url: str) -> None:
    assert http_status(host, url, "") == 401
    assert http_status(host, url, "operator:not-the-password-0123456789") == 401
    assert http_status(host, url, web_login(host)) == 200


def test_silences_outlive_a_restart_as_alertmanagers_own_user(host: Host) -> None:
    """Alertmanager runs as prometheus-alertmanager, not Debian's prometheus: it still writes its data
    directory (re-owned by StateDirectory=), so a silence made before a restart is there after it."""
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "NoSuchAlert", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "molecule",
        "comment": "survives a restart",
    }
    login = web_login(host)
    silence_id = http_post_json(host, f"{ALERTMANAGER}/api/v2/silences", silence, login)["silenceID"]
    host.check_output("systemctl restart prometheus-alertmanager")
    ready = ("python3 -c %s %s %s --status", URL_READER, f"{ALERTMANAGER}/-/ready", login)
    assert wait_for(lambda: host.run(*ready).stdout.strip() == "200", timeout_s=60)
    silences = http_json(host, f"{ALERTMANAGER}/api/v2/silences")
    assert silence_id in {listed["id"] for listed in silences}
