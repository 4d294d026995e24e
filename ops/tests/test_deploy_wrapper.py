"""ops/deploy_production_hygiene.sh against throw-away inventories and a one-task local playbook, with the
real ansible-inventory and ansible-playbook."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ops_files import DEPLOY_WRAPPER

HOSTS = "all:\n  hosts:\n    apply1:\n      ansible_connection: local\n"
PLAYBOOK = """- name: Probe
  hosts: all
  gather_facts: false
  tasks:
    - name: Report the mode
      ansible.builtin.debug:
        msg: "check_mode={{ ansible_check_mode }}"
"""


def make_inventory(root: Path, name: str, group_vars: str) -> Path:
    inventory = root / name
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(HOSTS)
    (inventory / "group_vars" / "all" / "main.yml").write_text(group_vars)
    return inventory


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.yml"
    path.write_text(PLAYBOOK)
    return path


def deploy(*args: str, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The caller's TESTNET never leaks in; the ansible tools beside this interpreter come first in PATH.
    env = {key: value for key, value in os.environ.items() if key != "TESTNET"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(environment or {})
    return subprocess.run(  # noqa: S603
        [str(DEPLOY_WRAPPER), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "group_vars"),
    [
        ("production", "apply_layer_testnet: true\n"),
        ("eu-live", "quantum_environment: production\napply_layer_testnet: true\n"),
        ("production", "apply_layer_testnet: 'false'\n"),
        ("production", "apply_layer_testnet: \"{{ lookup('env', 'TESTNET') }}\"\n"),
    ],
    ids=["dir-named-production", "variable-says-production", "string-not-boolean", "templated"],
)
def test_refuses_production_in_testnet_mode(
    tmp_path: Path, playbook: Path, name: str, group_vars: str
) -> None:
    inventory = make_inventory(tmp_path, name, group_vars)
    result = deploy("--playbook", str(playbook), str(inventory))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "apply1 sets apply_layer_testnet=" in result.stderr
    assert "check_mode" not in result.stdout


def test_refuses_production_with_testnet_in_the_shell(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    result = deploy("--playbook", str(playbook), str(inventory), environment={"TESTNET": "true"})
    assert result.returncode == 3
    assert "TESTNET=true is set in this shell" in result.stderr


def test_refuses_production_with_a_testnet_override(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    result = deploy("--playbook", str(playbook), str(inventory), "--", "-e", "apply_layer_testnet=true")
    assert result.returncode == 3
    assert "touches testnet mode" in result.stderr


def test_production_defaults_to_a_dry_run(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    result = deploy("--playbook", str(playbook), str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check_mode=True" in result.stdout
    assert "check_mode=False" not in result.stdout
    assert "Re-run with --apply" in result.stdout


def test_a_lab_inventory_may_run_testnet(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "lab", "quantum_environment: lab\napply_layer_testnet: true\n")
    result = deploy("--playbook", str(playbook), "--apply", "--yes", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.index("check_mode=True") < result.stdout.index("check_mode=False")


def test_apply_without_a_terminal_needs_yes(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    result = deploy("--playbook", str(playbook), "--apply", str(inventory))
    assert result.returncode == 2
    assert "add --yes" in result.stderr
    assert "check_mode=False" not in result.stdout


def test_skip_check_runs_once_for_real(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    result = deploy("--playbook", str(playbook), "--apply", "--yes", "--skip-check", str(inventory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check_mode=True" not in result.stdout
    assert "check_mode=False" in result.stdout


def encrypt_group_vars(inventory: Path, content: str, password_file: Path) -> None:
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text(content)
    subprocess.run(  # noqa: S603
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(password_file),
            str(vault),
        ],
        check=True,
        capture_output=True,
    )


def test_reads_encrypted_group_vars_with_the_vault_password(tmp_path: Path, playbook: Path) -> None:
    inventory = make_inventory(tmp_path, "production", "apply_layer_testnet: false\n")
    password_file = tmp_path / "vault-password"
    password_file.write_text("not-a-real-secret\n")
    encrypt_group_vars(inventory, "apply_layer_testnet: true\n", password_file)

    without_password = deploy("--playbook", str(playbook), str(inventory))
    assert without_password.returncode == 2
    assert "vault-password-file" in without_password.stderr

    with_password = deploy(
        "--playbook", str(playbook), str(inventory), "--", "--vault-password-file", str(password_file)
    )
    assert with_password.returncode == 3, with_password.stdout + with_password.stderr
    assert "apply1 sets apply_layer_testnet=true" in with_password.stderr
