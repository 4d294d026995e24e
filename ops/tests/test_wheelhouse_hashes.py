"""The wheelhouse `make wheelhouse` builds from the lock installs with the apply_layer role's own install
command (read from its tasks), and a wheel whose hash the lock lacks is refused."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / "build" / "wheelhouse"
LOCK = ROOT / "files" / "apply_layer_patch" / "requirements.lock"
RELEASE_TASKS = ROOT / "roles" / "apply_layer" / "tasks" / "release.yml"
RELEASE_DIR = "{{ apply_layer__release_dir }}"


def lock_pins() -> dict[str, set[str]]:
    """`name==version` of each lock entry, with its hashes."""
    joined = LOCK.read_text().replace("\\\n", " ")
    pins = {}
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pins[line.split()[0]] = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return pins


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    assert (WHEELHOUSE / "requirements.txt").is_file(), (
        f"no wheelhouse at {WHEELHOUSE}: run `make wheelhouse`"
    )
    return WHEELHOUSE


def role_install_argv(wheelhouse: Path, venv: Path) -> list[str]:
    """The argv of the role's install task, its release directory's venv and wheelhouse (and the
    package version the role reads from the wheel's name) filled in."""
    tasks = yaml.safe_load(RELEASE_TASKS.read_text())
    task = next(task for task in tasks if task["name"].startswith("Install the apply layer into the venv"))
    argv: list[str] = task["ansible.builtin.command"]["argv"]
    version = next(wheelhouse.glob("quantum_apply_layer-*.whl")).name.split("-")[1]
    return [
        arg.replace(f"{RELEASE_DIR}/venv", str(venv))
        .replace(f"{RELEASE_DIR}/wheelhouse", str(wheelhouse))
        .replace("{{ apply_layer__version }}", version)
        for arg in argv
    ]


def install(wheelhouse: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    """The role's install command in a fresh venv, with none of this machine's pip settings."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    argv = role_install_argv(wheelhouse, venv)
    assert not any("{{" in arg for arg in argv), f"the role's install command changed shape: {argv}"
    return subprocess.run(  # noqa: S603
        argv,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_release_requirements_pin_every_lock_entry_with_the_lock_hashes(wheelhouse: Path) -> None:
    joined = (wheelhouse / "requirements.txt").read_text().replace("\\\n", " ")
    release = {
        line.split()[0]: set(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        for line in joined.splitlines()
        if line.strip()
    }
    for pin, hashes in lock_pins().items():
        assert pin in release, f"{pin} of the lock is missing from the wheelhouse: run `make wheelhouse`"
        assert hashes <= release[pin], f"{pin}: the wheelhouse's hashes are not the lock's"


def test_wheelhouse_installs_with_require_hashes(wheelhouse: Path, tmp_path: Path) -> None:
    result = install(wheelhouse, tmp_path / "venv")
    assert result.returncode == 0, result.stderr
    ccxt_pin = next(pin for pin in lock_pins() if pin.startswith("ccxt=="))
    frozen = subprocess.run(  # noqa: S603
        [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert ccxt_pin in frozen
    assert (tmp_path / "venv" / "bin" / "quantum-apply-layer").exists()


def test_a_wheel_whose_hash_is_not_in_the_lock_is_refused(wheelhouse: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "wheelhouse"
    shutil.copytree(wheelhouse, tampered)
    # Same name and version, one file more: what a swapped or rebuilt upload would look like.
    wheel = next(tampered.glob("tenacity-*.whl"))
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("tenacity/injected.py", "print('not reviewed')\n")

    result = install(tampered, tmp_path / "venv")

    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert wheel.name in result.stderr
    # pip checks every hash before it installs anything: nothing of the release is in the venv.
    assert not (tmp_path / "venv" / "bin" / "quantum-apply-layer").exists()
