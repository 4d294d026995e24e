"""playbooks/deploy.yml refuses, in its first play, a fleet with an apply host whose Python or machine the
wheelhouse does not serve: every host stops before anything has changed. Run with the real ansible-playbook
on local-connection hosts, in check mode and with a tag no task carries, so only the checks (tagged
`always`) run: nothing here can change this machine."""

import subprocess
import sys
from pathlib import Path

from ansible_run import ROOT, ansible_playbook

DEPLOY = ROOT / "playbooks" / "deploy.yml"
PASSWORD = "preflight-test-0123456789"  # noqa: S105 (a throw-away inventory)
GROUP_VARS = f"""quantum_environment: lab
apply_layer_testnet: false
redis_apply_layer_password: {PASSWORD}
redis_exporter_password: {PASSWORD}
redis_admin_password: {PASSWORD}
redis_planner_password: {PASSWORD}
redis_risk_governor_password: {PASSWORD}
redis_position_brain_password: {PASSWORD}
redis_operator_password: {PASSWORD}
apply_layer_redis_password: {PASSWORD}
exporters_redis_password: {PASSWORD}
apply_layer_binance_api_key: preflight-test-key
apply_layer_binance_api_secret: preflight-test-secret
"""


def host_target() -> str:
    """What the role's preflight asks the host: its /usr/bin/python3's CPython tag and machine."""
    return subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            "import platform, sys; "
            "print(f'cp{sys.version_info[0]}{sys.version_info[1]} {platform.machine()}')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def wheelhouse(root: Path, name: str, targets: list[str] | None) -> Path:
    path = root / name
    path.mkdir()
    if targets is not None:
        (path / "TARGETS").write_text("".join(f"{target}\n" for target in targets))
    return path


def inventory(root: Path, wheelhouses: dict[str, Path], group_vars: str = "") -> Path:
    """Apply hosts named after their wheelhouse, all reached locally; `group_vars` override the lab's."""
    path = root / "inventory"
    (path / "group_vars" / "all").mkdir(parents=True)
    (path / "group_vars" / "all" / "main.yml").write_text(GROUP_VARS + group_vars)
    hosts = "".join(
        f"    {host}:\n      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
        f"      apply_layer_wheelhouse_dir: {directory}\n"
        for host, directory in wheelhouses.items()
    )
    (path / "hosts.yml").write_text(f"quantum:\n  hosts:\n{hosts}")
    return path


def deploy_checks_only(inventory_dir: Path) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(
        "-i", str(inventory_dir), str(DEPLOY), "--check", "--tags", "no-task-has-this-tag"
    )


def recap(output: str) -> list[str]:
    """One `host : ok=.. changed=..` line per host."""
    return [line for line in output.partition("PLAY RECAP")[2].splitlines() if " : ok=" in line]


def test_an_apply_host_whose_python_is_not_served_stops_every_host_before_any_change(tmp_path: Path) -> None:
    served = wheelhouse(tmp_path, "served", [host_target()])
    unserved = wheelhouse(tmp_path, "unserved", ["cp39 x86_64", "cp313 aarch64"])

    result = deploy_checks_only(inventory(tmp_path, {"apply-served": served, "apply-unserved": unserved}))

    assert result.returncode != 0, result.stdout
    assert f"apply-unserved runs {host_target()} (CPython and machine)" in result.stdout
    assert "does not serve (cp39 x86_64, cp313 aarch64)" in result.stdout
    assert "make wheelhouse" in result.stdout
    # The fleet stops in the checks' play: the served host goes no further either.
    assert "PLAY [Deploy Redis and its exporters]" not in result.stdout
    assert len(recap(result.stdout)) == 2
    assert all("changed=0" in line for line in recap(result.stdout)), result.stdout


def test_a_wheelhouse_without_targets_is_refused_with_what_to_do(tmp_path: Path) -> None:
    result = deploy_checks_only(inventory(tmp_path, {"apply-1": wheelhouse(tmp_path, "old", None)}))

    assert result.returncode != 0, result.stdout
    assert "it has no TARGETS file: run make wheelhouse" in result.stdout


def test_a_fleet_the_wheelhouse_serves_passes_the_checks(tmp_path: Path) -> None:
    both = wheelhouse(tmp_path, "both", ["cp311 x86_64", "cp313 x86_64", host_target()])

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": both, "apply-2": both}))

    checks = result.stdout.partition("PLAY [Deploy Redis and its exporters]")
    assert checks[1], f"the checks' play stopped the fleet:\n{result.stdout}"
    served = checks[0].partition("Check the wheelhouse serves the host's Python and architecture")[2]
    assert "ok: [apply-1]" in served
    assert "ok: [apply-2]" in served


def test_production_pointed_at_the_testnet_stops_in_the_checks(tmp_path: Path) -> None:
    served = wheelhouse(tmp_path, "served", [host_target()])
    production = (
        "quantum_environment: production\n"
        "apply_layer_exchange_url: https://testnet.binancefuture.com\n"
        "apply_layer_binance_api_key: production-test-key\n"
        "apply_layer_binance_api_secret: production-test-secret\n"
    )

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": served}, production))

    assert result.returncode != 0, result.stdout
    assert "Check production runs no emulator, no smoke test and no testnet" in result.stdout
    assert "not an emulator or the testnet" in result.stdout
    assert "PLAY [Deploy Redis and its exporters]" not in result.stdout


def test_a_testnet_deploy_pointed_at_the_exchange_stops_in_the_roles_preflight(tmp_path: Path) -> None:
    served = wheelhouse(tmp_path, "served", [host_target()])
    testnet = "apply_layer_testnet: true\napply_layer_exchange_url: https://fapi.binance.com\n"

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": served}, testnet))

    assert result.returncode != 0, result.stdout
    assert "apply_layer_testnet is true, so apply_layer_exchange_url must be the testnet" in result.stdout
    assert "PLAY [Deploy Redis and its exporters]" not in result.stdout


def test_a_web_user_with_an_example_password_is_refused_outside_the_lab(tmp_path: Path) -> None:
    """Prometheus's and Alertmanager's web users are secrets too: an example password stops the deploy,
    named by its user, never shown."""
    staging = "quantum_environment: staging\n" + (
        "prometheus_web_users: {operator: preflight-web-0123456789, prometheus: preflight-web-0123456789}\n"
        "alertmanager_web_users: {operator: example-web-password-0123}\n"
    )
    both = wheelhouse(tmp_path, "both", [host_target()])

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": both}, staging))

    assert result.returncode != 0, result.stdout
    assert "placeholder value" in result.stdout
    assert "alertmanager_web_users operator" in result.stdout
    assert "prometheus_web_users" not in result.stdout
    assert "example-web-password" not in result.stdout


def test_metrics_tls_on_for_the_targets_only_stops_in_the_checks(tmp_path: Path) -> None:
    """Exporters and the apply layer serving mutual TLS to a Prometheus left on plain HTTP would only
    read down after the deploy: the checks refuse it, naming the three settings."""
    served = wheelhouse(tmp_path, "served", [host_target()])
    half = "exporters_web_tls_enabled: true\napply_layer_metrics_tls_enabled: true\n"

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": served}, half))

    assert result.returncode != 0, result.stdout
    assert "must be on for the scraped and the scraper or for neither" in result.stdout
    assert '"prometheus_scrape_tls_enabled": [false]' in result.stdout
    assert "PLAY [Deploy Redis and its exporters]" not in result.stdout


def test_metrics_tls_on_at_both_ends_passes_the_checks(tmp_path: Path) -> None:
    served = wheelhouse(tmp_path, "served", [host_target()])
    both = (
        "exporters_web_tls_enabled: &metrics_tls true\n"
        "apply_layer_metrics_tls_enabled: *metrics_tls\n"
        "prometheus_scrape_tls_enabled: *metrics_tls\n"
    )

    result = deploy_checks_only(inventory(tmp_path, {"apply-1": served}, both))

    checks = result.stdout.partition("Check metrics over mutual TLS is on at both ends or at neither")[2]
    assert "ok: [apply-1]" in checks.partition("TASK [")[0], result.stdout
