"""rollback.yml proves the release it would go back to can start before it touches anything: its own
check-config, with this host's Python and the live env file. A release whose venv lost its Python (built
before a Debian upgrade) or that does not know a setting of the env file is refused; `current`, the
history and the running release stay as they were. The role's rollback tasks run here on this machine
(local connection) over a temporary base directory; this project's quantum-apply-layer stands in for a
release that can start."""

import subprocess
import sys
from pathlib import Path

import yaml
from ansible_run import ansible_playbook

HISTORY = "2026-11-27T10:00:00Z deploy 1.0.0-old\n2026-11-27T11:00:00Z deploy 1.1.0-new\n"
ENV_FILE = "REDIS_URL=redis://127.0.0.1:6379/0\nTESTNET=true\n"


def base_dir(tmp_path: Path, old_release_entry_point: Path) -> Path:
    """Two releases, 1.1.0-new current, 1.0.0-old before it; the old one's entry point as given."""
    base = tmp_path / "apply-layer"
    for release in ("1.0.0-old", "1.1.0-new"):
        (base / "releases" / release / "venv" / "bin").mkdir(parents=True)
    (base / "releases" / "1.0.0-old" / "venv" / "bin" / "quantum-apply-layer").symlink_to(
        old_release_entry_point
    )
    (base / "current").symlink_to(base / "releases" / "1.1.0-new")
    (base / "shared").mkdir()
    (base / "shared" / "history").write_text(HISTORY)
    (tmp_path / "credentials").mkdir()
    return base


def roll_back(tmp_path: Path, base: Path, env_file: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "apply-layer.env").write_text(env_file)
    play = [
        {
            "name": "Roll back over a temporary base directory",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {
                "ansible_python_interpreter": sys.executable,
                "apply_layer_base_dir": str(base),
                "apply_layer_env_file": str(tmp_path / "apply-layer.env"),
                "apply_layer_credentials_dir": str(tmp_path / "credentials"),
            },
            "tasks": [
                {
                    "name": "Roll back",
                    "ansible.builtin.include_role": {
                        "name": "apply_layer",
                        "tasks_from": "rollback",
                    },
                }
            ],
        }
    ]
    playbook = tmp_path / "rollback.yml"
    playbook.write_text(yaml.safe_dump(play))
    return ansible_playbook("-i", "localhost,", str(playbook))


def assert_nothing_changed(base: Path) -> None:
    assert (base / "current").readlink() == base / "releases" / "1.1.0-new"
    assert (base / "shared" / "history").read_text() == HISTORY


def test_a_release_whose_python_is_gone_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    # What a venv made on Debian 12 holds after the upgrade to 13: a link to a python3.11 that is gone.
    gone = tmp_path / "usr-bin-python3.11-removed"
    entry_point = tmp_path / "old-entry-point"
    entry_point.write_text(f"#!{gone}\n")
    entry_point.chmod(0o755)
    base = base_dir(tmp_path, entry_point)

    result = roll_back(tmp_path, base, ENV_FILE)

    assert result.returncode != 0, result.stdout
    assert "Release 1.0.0-old cannot start on this host" in result.stdout
    assert "nothing was changed, 1.1.0-new still runs" in result.stdout
    assert_nothing_changed(base)


def test_a_release_that_does_not_know_a_setting_of_the_env_file_is_refused(
    tmp_path: Path,
) -> None:
    base = base_dir(tmp_path, Path(sys.executable).parent / "quantum-apply-layer")

    result = roll_back(tmp_path, base, ENV_FILE + "APPLY_SETTING_FROM_THE_FUTURE=1\n")

    assert result.returncode != 0, result.stdout
    assert "Release 1.0.0-old cannot start on this host" in result.stdout
    assert "APPLY_SETTING_FROM_THE_FUTURE" in result.stdout  # check-config names the key it refuses
    assert_nothing_changed(base)
