#!/usr/bin/env bash
# Build the wheelhouse the apply_layer role ships to targets that cannot reach a package index:
# the apply layer's wheel and every wheel it depends on, made with the controller's python3.11
# (the targets run Debian 12's python3.11, the same ABI).
#
# Reproducible: the package is built from a clean copy of its sources with SOURCE_DATE_EPOCH fixed,
# so the same sources give the same bytes, and the role's content-addressed release id stays the same.
# Skipped when the inputs (sources, python, pip's configuration) have not changed; FORCE=1 rebuilds.
# PACKAGE_DIR builds another copy of the package (a test's patched release) instead of this tree's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
package=$(cd "${PACKAGE_DIR:-$root/files/apply_layer_patch}" && pwd)
wheelhouse="${WHEELHOUSE:-$root/build/wheelhouse}"
python=${PYTHON:-python3.11}
# Debian 12's python3.11. Requirements whose markers hold there but not on the controller (redis-py's
# `async-timeout; python_full_version < "3.11.3"`) are added, or `pip install --no-index` fails there.
target_python=${TARGET_PYTHON_VERSION:-3.11.2}
stamp="$wheelhouse/.inputs.sha256"

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "build-wheelhouse: $python is not a Python 3.11 (the targets run 3.11); set PYTHON=" >&2
  exit 1
fi

# Only what ends up in a wheel counts: the package's metadata and src/, not its tests or caches.
source_files() {
  (cd "$package" && find pyproject.toml src -type f \
    ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print | LC_ALL=C sort)
}

inputs_digest() {
  {
    "$python" -VV
    echo "target $target_python"
    "$python" -m pip --version | cut -d' ' -f1-2
    "$python" -m pip config list 2>/dev/null || true
    source_files | while IFS= read -r f; do
      printf '%s  %s\n' "$(sha256sum <"$package/$f" | cut -d' ' -f1)" "$f"
    done
  } | sha256sum | cut -d' ' -f1
}

digest=$(inputs_digest)
if [ "${FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  echo "wheelhouse up to date: $wheelhouse"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/wheels"
# A clean copy: no stale build/ or egg-info from a developer's tree can slip into the wheel.
source_files | while IFS= read -r f; do
  mkdir -p "$work/src/$(dirname "$f")"
  cp -p "$package/$f" "$work/src/$f"
done

# Wheel archives record file times; a fixed epoch makes the built wheels byte-for-byte repeatable.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
export PYTHONHASHSEED=0
# pip warns about every index of its configuration that lacks a project; only real errors are shown.
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" "$work/src" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2 || true)

# Requirements the target's python needs beyond the controller's, until nothing is missing.
for _ in 1 2 3; do
  missing=$("$python" - "$work/wheels" "$target_python" <<'PY'
import sys, zipfile
from pathlib import Path
from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

wheels, version = Path(sys.argv[1]), sys.argv[2]
target = dict(default_environment(), python_full_version=version, python_version=version.rsplit(".", 1)[0])
present = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(meta).decode().splitlines()
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.partition(":")[2].strip())
            env = dict(target, extra="")
            if (req.marker is None or req.marker.evaluate(env)) and canonicalize_name(req.name) not in present:
                print(f"{req.name}{req.specifier}")
PY
)
  [ -z "$missing" ] && break
  echo "adding for python $target_python: $missing"
  # shellcheck disable=SC2086 # one requirement per word
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/wheels" $missing \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2 || true)
done

# Replace the wheelhouse as a whole so a dependency dropped since the last build does not linger.
mkdir -p "$(dirname "$wheelhouse")"
rm -rf "$wheelhouse.new"
mv "$work/wheels" "$wheelhouse.new"
(cd "$wheelhouse.new" && sha256sum -- *.whl | LC_ALL=C sort -k2 >SHA256SUMS)
printf '%s\n' "$digest" >"$wheelhouse.new/.inputs.sha256"
rm -rf "$wheelhouse"
mv "$wheelhouse.new" "$wheelhouse"
echo "wheelhouse built: $wheelhouse ($(find "$wheelhouse" -name '*.whl' | wc -l) wheels)"
