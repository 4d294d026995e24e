"""Each setting is declared once, in config.SETTINGS. Its copies for people and for the role are
checked here: README's "Environment" table, the env-file template and the role's argument_specs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantum_apply_layer.config import SETTINGS, setting_names
from quantum_apply_layer.settings_doc import environment_table

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
ENV_TEMPLATE = ROOT / "roles/apply_layer/templates/etc/quantum/apply-layer.env.j2"
ARGUMENT_SPECS = ROOT / "roles/apply_layer/meta/argument_specs.yml"
# Where the role deliberately chooses another default than the service, and why.
ROLE_CHOOSES_OTHERWISE = {
    "APPLY_METRICS_ADDR": "without mutual TLS anyone who reaches it reads it: the role keeps it on loopback",
    "APPLY_EXCHANGE_URL": "the service's default is by mode; the role's is production's",
    "APPLY_METRICS_TLS_CLIENT_CA": "written with apply_layer_metrics_tls_enabled only: private_ca's CA file",
}
BY_NAME = {setting.name: setting for setting in SETTINGS}


def _template_lines() -> dict[str, str]:
    """NAME -> the Jinja expression the template writes for it."""
    lines = {}
    for line in ENV_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            lines[name] = value
    return lines


def _role_options() -> dict[str, dict[str, Any]]:
    specs = yaml.safe_load(ARGUMENT_SPECS.read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = specs["argument_specs"]["main"]["options"]
    return options


def test_readme_environment_table_is_the_one_config_writes() -> None:
    readme = README.read_text(encoding="utf-8")
    start = readme.index("| variable | default | accepted | meaning |")
    end = readme.index("\n\n", start)
    assert readme[start:end] + "\n" == environment_table(), (
        "README's Environment table drifted from config.SETTINGS: replace it with the output of "
        "`python -m quantum_apply_layer.settings_doc`"
    )


def test_the_env_template_writes_only_known_settings() -> None:
    written = set(_template_lines())
    assert written, f"no NAME=value line found in {ENV_TEMPLATE}"
    assert written <= setting_names(), f"unknown in the template: {sorted(written - setting_names())}"


@pytest.mark.parametrize("name", sorted(_template_lines()))
def test_each_template_variable_is_declared_in_argument_specs(name: str) -> None:
    role_variables = set(re.findall(r"\b(apply_layer_\w+)", _template_lines()[name]))
    assert role_variables, f"{name} in the template names no role variable"
    assert role_variables <= set(_role_options()), (
        f"{name}: undeclared {role_variables - set(_role_options())}"
    )


def _straight_through() -> dict[str, str]:
    """NAME -> the one role variable the template writes as it is (REDIS_URL and the lists are composed)."""
    found = {}
    for name, expression in _template_lines().items():
        straight = re.fullmatch(r"\{\{ (apply_layer_\w+)(?: \| bool \| lower)? \}\}", expression)
        if straight:
            found[name] = straight.group(1)
    return found


def test_most_settings_pass_straight_through() -> None:
    assert len(_straight_through()) >= 10


@pytest.mark.parametrize(("name", "variable"), sorted(_straight_through().items()))
def test_a_setting_passed_straight_through_is_described_with_its_default(name: str, variable: str) -> None:
    option = _role_options()[variable]
    description = (
        " ".join(option["description"]) if isinstance(option["description"], list) else option["description"]
    )
    assert name in description, f"{variable}'s description should name {name}"
    setting = BY_NAME[name]
    if name in ROLE_CHOOSES_OTHERWISE or callable(setting.default):
        return
    assert str(option.get("default")).lower() == setting.default.lower(), (
        f"{variable} defaults to {option.get('default')!r}, the service's {name} to {setting.default!r}"
    )
