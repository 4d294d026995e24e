"""scripts/wheelhouse_lock.py: which lock entries each target Python installs, and the release requirements
that refuse a wheel built from sources whose requirements the lock no longer satisfies."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "wheelhouse_lock.py"
LOCK = ROOT / "files" / "apply_layer_patch" / "requirements.lock"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


def names(requirements: str) -> set[str]:
    return {line.split("==")[0] for line in requirements.splitlines() if "==" in line}


def own_wheel(directory: Path, requires: list[str]) -> Path:
    """A minimal wheel of the apply layer whose metadata asks for `requires`."""
    directory.mkdir()
    wheel = directory / "quantum_apply_layer-9.9.9-py3-none-any.whl"
    metadata = "Metadata-Version: 2.1\nName: quantum-apply-layer\nVersion: 9.9.9\n" + "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("quantum_apply_layer-9.9.9.dist-info/METADATA", metadata)
    return wheel


def test_debian_12s_python_gets_what_its_old_patch_release_needs_and_debian_13s_does_not() -> None:
    bookworm = run("target", str(LOCK), "3.11.2", "x86_64")
    trixie = run("target", str(LOCK), "3.13.5", "x86_64")
    assert bookworm.returncode == trixie.returncode == 0, bookworm.stderr + trixie.stderr
    # redis-py: `async-timeout; python_full_version < "3.11.3"`.
    assert "async-timeout" in names(bookworm.stdout)
    assert "async-timeout" not in names(trixie.stdout)
    assert {"aiohttp", "ccxt", "redis", "sdnotify"} <= names(bookworm.stdout) & names(trixie.stdout)
    # Windows-only entries of the universal lock are for neither.
    assert "winloop" not in names(bookworm.stdout) | names(trixie.stdout)


def test_release_requirements_add_the_hash_of_our_wheel(tmp_path: Path) -> None:
    wheel = own_wheel(tmp_path / "wheelhouse", ["tenacity<10,>=9", "ccxt<4.6,>=4.5.27"])
    result = run("release", str(LOCK), str(wheel.parent))
    assert result.returncode == 0, result.stderr
    own = result.stdout.partition("quantum-apply-layer==9.9.9")[2]
    assert f"--hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}" in own


def test_a_requirement_the_lock_does_not_satisfy_says_to_run_make_lock(tmp_path: Path) -> None:
    wheel = own_wheel(tmp_path / "wheelhouse", ["tenacity<10,>=9", "ccxt>=9"])
    result = run("release", str(LOCK), str(wheel.parent))
    assert result.returncode != 0
    assert "the lock is stale" in result.stderr
    assert "requires ccxt>=9" in result.stderr
    assert "run `make lock`" in result.stderr
