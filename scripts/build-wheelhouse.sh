#!/usr/bin/env bash
# Build the wheelhouse the apply_layer role ships to targets that cannot reach a package index: one
# wheelhouse for every supported target, from the hash-pinned lock (files/apply_layer_patch/requirements.lock,
# `make lock`), so one release serves Debian 12 and Debian 13 hosts side by side during an upgrade.
#
#   TARGET_PYTHONS  the CPython of each supported Debian release (12: 3.11.2, 13: 3.13.5); the full
#                   version decides markers such as redis-py's `async-timeout; python_full_version < "3.11.3"`
#   TARGET_ARCHS    machine architectures served (x86_64)
#   MANYLINUX_GLIBC the oldest glibc of the supported releases (Debian 12: 2.36); newer wheels cannot run there
#
# Each target's wheels are downloaded for that Python (`pip download --python-version`), so a controller
# with Python 3.11 alone builds a wheelhouse for 3.13 too, and every download is checked against the lock's
# hashes. A locked package published only as an sdist (sdnotify) is built here into a pure wheel; a compiled
# one without a wheel for a target fails the build, naming both. The apply layer's own wheel is built once.
# The wheelhouse holds:
#   *.whl             the wheels
#   requirements.txt  the lock plus the hashes of the wheels built here: targets install with --require-hashes
#   TARGETS           one `cp311 x86_64` line per served target, read by the role's preflight
#   SHA256SUMS        every wheel's sha256
#
# Reproducible: the package is built from a clean copy of its sources with SOURCE_DATE_EPOCH fixed,
# so the same sources and lock give the same bytes, and the role's release id stays the same.
# Skipped when the inputs (sources, lock, targets, python, pip's configuration) have not changed; FORCE=1
# rebuilds. PACKAGE_DIR builds another copy of the package (a test's patched release) instead of this tree's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
package=$(cd "${PACKAGE_DIR:-$root/files/apply_layer_patch}" && pwd)
lock=${LOCK:-$root/files/apply_layer_patch/requirements.lock}
wheelhouse="${WHEELHOUSE:-$root/build/wheelhouse}"
python=${PYTHON:-python3.11}
read -r -a target_pythons <<<"${TARGET_PYTHONS:-3.11.2 3.13.5}"
read -r -a target_archs <<<"${TARGET_ARCHS:-x86_64}"
glibc_minor=${MANYLINUX_GLIBC:-2.36}
glibc_minor=${glibc_minor#2.}
stamp="$wheelhouse/.inputs.sha256"

if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "build-wheelhouse: $python is not a Python 3.11 or newer; set PYTHON=" >&2
  exit 1
fi
if [ ! -f "$lock" ]; then
  echo "build-wheelhouse: no lock at $lock; run \`make lock\` and commit it" >&2
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
    echo "targets ${target_pythons[*]} on ${target_archs[*]}, glibc 2.$glibc_minor"
    "$python" -m pip --version | cut -d' ' -f1-2
    "$python" -m pip config list 2>/dev/null || true
    sha256sum <"$lock"
    sha256sum <"$root/scripts/wheelhouse_lock.py"
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
mkdir -p "$work/src" "$work/wheels" "$work/sdists"
# A clean copy: no stale build/ or egg-info from a developer's tree can slip into the wheel.
source_files | while IFS= read -r f; do
  mkdir -p "$work/src/$(dirname "$f")"
  cp -p "$package/$f" "$work/src/$f"
done

# Wheel archives record file times; a fixed epoch makes the built wheels byte-for-byte repeatable.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
export PYTHONHASHSEED=0
# pip warns about every index of its configuration that lacks a project; only real errors are shown.
pip_quiet() {
  "$python" -m pip "$@" --quiet --disable-pip-version-check \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2 || true)
}

pip_quiet wheel --no-deps --wheel-dir "$work/wheels" "$work/src"

for version in "${target_pythons[@]}"; do
  IFS=. read -r major minor _ <<<"$version"
  tag="cp$major$minor"
  for arch in "${target_archs[@]}"; do
    platforms=("--platform=manylinux1_$arch" "--platform=manylinux2010_$arch" "--platform=manylinux2014_$arch")
    for glibc in $(seq 5 "$glibc_minor"); do platforms+=("--platform=manylinux_2_${glibc}_$arch"); done
    "$python" "$root/scripts/wheelhouse_lock.py" target "$lock" "$version" "$arch" >"$work/$tag-$arch.txt"
    # --no-deps: the lock is the whole closure (markers decided above for this target); wheels preferred,
    # an sdist taken only where a package publishes no wheel at all, and checked below.
    if ! pip_quiet download --no-deps --require-hashes --prefer-binary --dest "$work/sdists" \
      --python-version "$major.$minor" --implementation cp --abi "$tag" --abi abi3 --abi none \
      "${platforms[@]}" -r "$work/$tag-$arch.txt"; then
      echo "build-wheelhouse: the lock cannot be served to CPython $version on $arch (see pip's error above)" >&2
      exit 1
    fi
  done
done
mv "$work"/sdists/*.whl "$work/wheels/"

# Locked packages published only as an sdist: built here, accepted only as pure wheels (any target).
for sdist in "$work"/sdists/*; do
  [ -e "$sdist" ] || continue
  mkdir -p "$work/built"
  pip_quiet wheel --no-deps --wheel-dir "$work/built" "$sdist"
  for wheel in "$work"/built/*.whl; do
    if [[ $wheel != *-py3-none-any.whl && $wheel != *-py2.py3-none-any.whl ]]; then
      echo "build-wheelhouse: $(basename "$sdist") has no wheel for every target and builds to" \
        "$(basename "$wheel"), not a pure wheel; pin a version with wheels in pyproject.toml and run make lock" >&2
      exit 1
    fi
    mv "$wheel" "$work/wheels/"
  done
done

"$python" "$root/scripts/wheelhouse_lock.py" release "$lock" "$work/wheels" >"$work/wheels/requirements.txt"
for version in "${target_pythons[@]}"; do
  IFS=. read -r major minor _ <<<"$version"
  for arch in "${target_archs[@]}"; do echo "cp$major$minor $arch"; done
done >"$work/wheels/TARGETS"

# Replace the wheelhouse as a whole so a dependency dropped since the last build does not linger.
mkdir -p "$(dirname "$wheelhouse")"
rm -rf "$wheelhouse.new"
mv "$work/wheels" "$wheelhouse.new"
(cd "$wheelhouse.new" && sha256sum -- *.whl | LC_ALL=C sort -k2 >SHA256SUMS)
printf '%s\n' "$digest" >"$wheelhouse.new/.inputs.sha256"
rm -rf "$wheelhouse"
mv "$wheelhouse.new" "$wheelhouse"
echo "wheelhouse built: $wheelhouse ($(find "$wheelhouse" -name '*.whl' | wc -l) wheels for $(paste -sd, "$wheelhouse/TARGETS"))"
