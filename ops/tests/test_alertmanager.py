"""The Alertmanager template renders to a configuration amtool accepts, with and without secrets, routes
each severity to the receivers on-call expects, and inhibits only what it means to."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ops_files import ALERTMANAGER_TEMPLATE, alerting_rules

WITH_SECRETS = {
    "alertmanager_webhook_url": "http://127.0.0.1:9099/alerts",
    "alertmanager_slack_api_url": "https://hooks.slack.example/services/T000/B000/x'y\"z",
    "alertmanager_slack_channel": "#quantum-alerts",
    "alertmanager_pagerduty_routing_key": "0123456789abcdef0123456789abcdef",
}
WITHOUT_SECRETS = dict.fromkeys(WITH_SECRETS, "")


def render(variables: dict[str, str]) -> str:
    # trim_blocks as Ansible's template module does; StrictUndefined so a missing variable fails here.
    environment = jinja2.Environment(  # noqa: S701 (YAML, not HTML)
        trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(ALERTMANAGER_TEMPLATE.read_text()).render(**variables)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("amtool")
    assert binary, "amtool is not installed: apt-get install -y prometheus-alertmanager"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)  # noqa: S603


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(WITH_SECRETS))
    return path


@pytest.mark.parametrize(
    "variables", [WITH_SECRETS, WITHOUT_SECRETS], ids=["with-secrets", "without-secrets"]
)
def test_rendered_config_passes_amtool(tmp_path: Path, variables: dict[str, str]) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(variables))
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_render_as_quoted_strings(config_file: Path) -> None:
    assert '"https://hooks.slack.example/services/T000/B000/x\\u0027y\\"z"' in config_file.read_text()


def test_empty_secrets_leave_receivers_without_integrations() -> None:
    rendered = render(WITHOUT_SECRETS)
    for integration in ("webhook_configs", "slack_configs", "pagerduty_configs"):
        assert integration not in rendered


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=ApplyLayerDown", "severity=critical"], "webhook,pagerduty,slack"),
        (["alertname=ApplyLayerDeadLetters", "severity=warning"], "webhook,slack"),
        (["alertname=Watchdog", "severity=info"], "webhook"),
    ],
)
def test_routing_by_severity(config_file: Path, labels: list[str], receivers: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={config_file}", *labels)
    assert result.stdout.strip() == receivers, result.stderr


# An Alertmanager matcher as the template writes them: name, operator, quoted value.
_MATCHER = re.compile(r'^\s*(?P<name>\w+)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>.*)"\s*$')


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    parsed = _MATCHER.match(matcher)
    assert parsed, f"matcher not understood: {matcher}"
    value = labels.get(parsed["name"], "")
    operator = parsed["op"]
    if operator in {"=~", "!~"}:  # Alertmanager anchors its regular expressions
        return bool(re.fullmatch(parsed["value"], value)) == (operator == "=~")
    return (value == parsed["value"]) == (operator == "=")


def _alert_labels() -> dict[str, dict[str, str]]:
    """Each alert's name with the static labels its rule gives it."""
    return {rule["alert"]: {"alertname": rule["alert"], **rule["labels"]} for rule in alerting_rules()}


def _inhibit_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(render(WITH_SECRETS))["inhibit_rules"]
    return rules


def _inhibits(source: str, target: str) -> bool:
    labels = _alert_labels()
    return any(
        all(_matches(m, labels[source]) for m in rule["source_matchers"])
        and all(_matches(m, labels[target]) for m in rule["target_matchers"])
        for rule in _inhibit_rules()
    )


def test_every_inhibition_matcher_names_an_existing_alert() -> None:
    """A renamed alert must not leave an inhibition that silently matches nothing."""
    alerts = _alert_labels().values()
    for rule in _inhibit_rules():
        for side in ("source_matchers", "target_matchers"):
            assert any(all(_matches(m, labels) for m in rule[side]) for labels in alerts), rule[side]


@pytest.mark.parametrize(
    ("source", "target", "inhibited"),
    [
        ("ApplyLayerKillSwitchEngaged", "ApplyLayerNoExecution", True),
        ("ApplyLayerKillSwitchEngagedLong", "ApplyLayerKillSwitchEngaged", True),
        ("ApplyLayerAutoTripped", "ApplyLayerKillSwitchEngaged", True),
        # An hour-long halt pages even when the service tripped it itself.
        ("ApplyLayerAutoTripped", "ApplyLayerKillSwitchEngagedLong", False),
        # Trading while halted is exactly what the team must hear about.
        ("ApplyLayerKillSwitchEngaged", "ApplyLayerEmergencyClose", False),
        ("ApplyLayerKillSwitchEngaged", "ApplyLayerAutoTripped", False),
        ("ApplyLayerKillSwitchEngaged", "ApplyLayerSymbolSwitchEngaged", False),
    ],
)
def test_inhibitions(source: str, target: str, inhibited: bool) -> None:
    assert _inhibits(source, target) is inhibited
