"""Read the hash-pinned lock for scripts/build-wheelhouse.sh.

  wheelhouse_lock.py target LOCK PYTHON_VERSION ARCH
      the lock's entries whose markers hold on a Linux target running CPython PYTHON_VERSION (e.g.
      3.11.2) on ARCH: what that target installs, so what the wheelhouse must hold for it.
  wheelhouse_lock.py release LOCK WHEELHOUSE
      the release's requirements: the lock, plus the hashes of the wheels built here (the apply
      layer's own, and those built from a locked sdist); targets install with --require-hashes from it.
      Fails, saying to run `make lock`, when the apply layer asks for a package or version the lock lacks.

The lock is read with pip's own parser of requirements, so both sides agree on what it says.
"""

import hashlib
import re
import sys
import zipfile
from pathlib import Path

from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

# `name==version ; marker` followed by `--hash=sha256:...` options, continuation lines joined.
HASH = re.compile(r"\s+--hash=sha256:([0-9a-f]{64})")


def entries(lock: Path) -> list[tuple[str, list[str]]]:
    """Each locked requirement with its hashes, in the lock's order."""
    joined = re.sub(r"\\\n", " ", lock.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        hashes = HASH.findall(" " + line)
        requirement = HASH.sub("", " " + line).strip()
        if not hashes or "==" not in requirement:
            raise SystemExit(f"{lock}: every entry must be name==version with --hash (got {line[:80]!r})")
        found.append((requirement, hashes))
    return found


def target(lock: Path, python_version: str, arch: str) -> str:
    env = dict(
        default_environment(),
        python_full_version=python_version,
        python_version=".".join(python_version.split(".")[:2]),
        implementation_name="cpython",
        platform_python_implementation="CPython",
        platform_machine=arch,
        platform_system="Linux",
        sys_platform="linux",
        os_name="posix",
    )
    blocks = []
    for requirement, hashes in entries(lock):
        marker = Requirement(requirement).marker
        if marker is None or marker.evaluate(env):
            blocks.append(block(requirement.partition(";")[0].strip(), hashes))
    return "".join(blocks)


def release(lock: Path, wheelhouse: Path) -> str:
    """The lock's entries, each with the hashes of its wheels built here added, then the wheels no
    entry names (the apply layer's own). Downloads were checked against the lock, so a wheel whose hash
    the lock lacks was built here: from a locked sdist, whose hash pip checked, or from our sources."""
    built: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        built.setdefault(canonicalize_name(name), []).append(hashlib.sha256(wheel.read_bytes()).hexdigest())
        versions[canonicalize_name(name)] = str(version)
    blocks = []
    for requirement, hashes in entries(lock):
        locked = canonicalize_name(Requirement(requirement).name)
        extra = [h for h in built.pop(locked, []) if h not in hashes]
        blocks.append(block(requirement, hashes + extra))
    pins: dict[str, Requirement] = {
        canonicalize_name(Requirement(r).name): Requirement(r) for r, _ in entries(lock)
    }
    for own, hashes in sorted(built.items()):
        wheel = next(wheelhouse.glob(f"{own.replace('-', '_')}-*.whl"))
        check_locked(wheel, pins)
        blocks.append(block(f"{own}=={versions[own]}", hashes))
    return "".join(blocks)


def check_locked(wheel: Path, pins: dict[str, Requirement]) -> None:
    """Every requirement of a wheel built from our sources is pinned by the lock at a version it accepts."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        wanted = Requirement(line.partition(":")[2].strip())
        pin = pins.get(canonicalize_name(wanted.name))
        locked = str(pin.specifier).removeprefix("==") if pin else None
        if locked is None or not wanted.specifier.contains(locked, prereleases=True):
            raise SystemExit(
                f"the lock is stale: {wheel.name} requires {wanted}, the lock pins {locked or 'nothing'}; "
                "run `make lock`, review and commit files/apply_layer_patch/requirements.lock"
            )


def block(requirement: str, hashes: list[str]) -> str:
    return " \\\n    ".join([requirement] + [f"--hash=sha256:{h}" for h in hashes]) + "\n"


def main(argv: list[str]) -> None:
    match argv:
        case ["target", lock, python_version, arch]:
            sys.stdout.write(target(Path(lock), python_version, arch))
        case ["release", lock, wheelhouse]:
            sys.stdout.write(release(Path(lock), Path(wheelhouse)))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
