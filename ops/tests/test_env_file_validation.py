"""The apply_layer role writes the env file only once the release's own `check-config` accepts it (as
promtool guards Prometheus's files): a bad value fails the deploy with check-config's message, and the live
file stays as it was. The role's configure tasks run here on this machine (local connection) into a
temporary directory, with this project's quantum-apply-layer standing in for the release's."""

import subprocess
import sys
from pathlib import Path

import yaml
from ansible_run import ansible_playbook

LIVE = "# the env file the running release reads\n"
PASSWORD = "validation-test-0123456789"  # noqa: S105 (a throw-away value)


def configure(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    release = tmp_path / "releases" / "validation-test"
    (release / "venv" / "bin").mkdir(parents=True)
    (release / "venv" / "bin" / "quantum-apply-layer").symlink_to(
        Path(sys.executable).parent / "quantum-apply-layer"
    )
    play = [
        {
            "name": "Configure the apply layer into a temporary directory",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {
                "ansible_python_interpreter": sys.executable,
                "apply_layer_base_dir": str(tmp_path),
                "apply_layer__release_id": release.name,
                "apply_layer_env_file": str(tmp_path / "apply-layer.env"),
                "apply_layer_credentials_dir": str(tmp_path / "credentials"),
                "apply_layer_group": "root",
                "apply_layer_redis_password": PASSWORD,
                "apply_layer_binance_api_key": "validation-test-key",
                "apply_layer_binance_api_secret": "validation-test-secret",
                **settings,
            },
            "tasks": [
                {
                    "name": "Write the credentials and the env file",
                    "ansible.builtin.include_role": {"name": "apply_layer", "tasks_from": "configure"},
                }
            ],
        }
    ]
    playbook = tmp_path / "configure.yml"
    playbook.write_text(yaml.safe_dump(play))
    (tmp_path / "apply-layer.env").write_text(LIVE)
    return ansible_playbook("-i", "localhost,", str(playbook))


def test_a_bad_value_fails_with_check_configs_message_and_leaves_the_live_file(tmp_path: Path) -> None:
    result = configure(tmp_path, apply_layer_log_format="yaml")

    assert result.returncode != 0, result.stdout
    assert "was not replaced (the release's check-config validates it first)" in result.stdout
    assert "APPLY_LOG_FORMAT='yaml': accepted values: json, kv" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert (tmp_path / "apply-layer.env").read_text() == LIVE


def test_a_testnet_env_file_pointed_at_the_exchange_is_refused(tmp_path: Path) -> None:
    result = configure(
        tmp_path, apply_layer_testnet="true", apply_layer_exchange_url="https://fapi.binance.com"
    )

    assert result.returncode != 0, result.stdout
    assert "TESTNET=true with APPLY_EXCHANGE_URL='https://fapi.binance.com'" in result.stdout
    assert (tmp_path / "apply-layer.env").read_text() == LIVE
