"""Where the ops files are, and what they declare: alerts, recording rules, dashboard queries."""

import json
from pathlib import Path
from typing import Any

import yaml

OPS_DIR = Path(__file__).resolve().parents[1]
ALERT_RULES = OPS_DIR / "prometheus_alert_rules.yml"
RECORDING_RULES = OPS_DIR / "prometheus_recording_rules.yml"
RULE_FILES = (ALERT_RULES, RECORDING_RULES)
DASHBOARD = OPS_DIR / "dashboards" / "quantum-apply-layer.json"
RUNBOOKS_DIR = OPS_DIR / "runbooks"
ALERTMANAGER_TEMPLATE = OPS_DIR / "alertmanager.yml.j2"
DEPLOY_WRAPPER = OPS_DIR / "deploy_production_hygiene.sh"


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of every group in a Prometheus rules file."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for rule in rules(path) if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for path in RULE_FILES for rule in rules(path) if "record" in rule}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, rows' nested panels included."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(dashboard_panels(panel.get("panels", [])))
    return found
