#!/usr/bin/env bash
# `make bench-deploy`: how long deploys take. Each run starts from a fresh systemd container with the
# lab's variables (its own name and no published ports, so it runs beside the lab and molecule) and times
#   fresh converge   playbooks/deploy.yml onto the empty container: the whole stack
#   second converge  the same again; it must change nothing (changed=0) or the bench fails
#   deploy B         a second release: the package under another version
#   rollback         playbooks/rollback.yml back to the first release, restarted and health-checked
# then prints each run's seconds and the median. BENCH_RUNS (default 3) runs; fewer than 3 is a smoke
# try, not a figure. QH_DEBIAN (13, default, or 12) is the Debian release of the containers. The machine
# may be shared: the load average at start and end says how quiet it was.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
container=${QH_BENCH_CONTAINER:-qh-bench-deploy}
runs=${BENCH_RUNS:-3}
out="$root/build/bench-deploy"
release_link=/opt/quantum/apply-layer/current
export ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_NOCOLOR=1
# shellcheck source=systemd-container.sh source-path=SCRIPTDIR disable=SC1091 # checked on its own too
source "$root/scripts/systemd-container.sh"
release=${QH_DEBIAN:-13}
image=$(debian_image "$release")

case $runs in
  '' | *[!0-9]* | 0)
    echo "bench-deploy: BENCH_RUNS must be a whole number of runs, 1 or more (got '$runs')" >&2
    exit 1
    ;;
esac

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
bash scripts/ensure-docker.sh
bash scripts/build-image.sh "$(debian_suite "$release")"
bash scripts/build-wheelhouse.sh

work=$(mktemp -d)
cleanup() {
  docker rm -f "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# An interrupted bench still removes its container.
trap 'exit 130' INT
trap 'exit 143' TERM

# Release B: the same sources under another version, so its release id differs from A's.
a_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' files/apply_layer_patch/pyproject.toml)
b_version="${a_version%%+*}+bench"
mkdir -p "$work/package-b"
cp -r files/apply_layer_patch/pyproject.toml files/apply_layer_patch/src "$work/package-b/"
sed -i "s/^version = \".*\"\$/version = \"$b_version\"/" "$work/package-b/pyproject.toml"
PACKAGE_DIR="$work/package-b" WHEELHOUSE="$out/wheelhouse-b" bash scripts/build-wheelhouse.sh

# The lab inventory's variables for a host named after this container.
mkdir -p "$work/inventory"
ln -s "$root/inventories/lab/group_vars" "$work/inventory/group_vars"
cat >"$work/inventory/hosts.yml" <<EOF
quantum:
  hosts:
    $container:
      ansible_connection: community.docker.docker
EOF
playbook() { ansible-playbook -i "$work/inventory" "$@"; }

rm -rf "$out/logs"
mkdir -p "$out/logs"
steps=(fresh second deploy_b rollback)
declare -A label=([fresh]="fresh converge" [second]="second converge (changed=0)"
  [deploy_b]="deploy B" [rollback]="rollback to A")
declare -A seconds

# timed STEP RUN COMMAND...: COMMAND's output goes to the step's log, its wall-clock seconds to `seconds`.
timed() {
  local step=$1 run=$2 log="$out/logs/run$2-$1.log" start
  shift 2
  start=$(date +%s.%N)
  if ! "$@" >"$log" 2>&1; then
    echo "bench-deploy: ${label[$step]} failed in run $run; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  seconds[$step,$run]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '  %-28s %6s s\n' "${label[$step]}" "${seconds[$step,$run]}"
}

# fail_unless_unchanged LOG: every host of the play recap says changed=0.
fail_unless_unchanged() {
  local counts
  counts=$(sed -n '/^PLAY RECAP/,$p' "$1" | grep -Eo 'changed=[0-9]+' || true)
  if [ -z "$counts" ] || grep -qv '^changed=0$' <<<"$counts"; then
    echo "bench-deploy: the second converge changed something (must be changed=0); its recap, from $1:" >&2
    sed -n '/^PLAY RECAP/,$p' "$1" >&2
    grep -B1 -E '^changed:' "$1" >&2 || true
    exit 1
  fi
}

current_release() { docker exec "$container" readlink "$release_link"; }

median() {
  printf '%s\n' "$@" | sort -n |
    awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); printf "%.1f", NR % 2 ? v[m] : (v[m] + v[m + 1]) / 2 }'
}

for run in $(seq 1 "$runs"); do
  echo "run $run of $runs: a fresh container $container"
  docker rm -f "$container" >/dev/null 2>&1 || true
  systemd_container_create "$container" "$image"
  systemd_container_ready "$container"

  timed fresh "$run" playbook playbooks/deploy.yml
  release_a=$(current_release)
  timed second "$run" playbook playbooks/deploy.yml
  fail_unless_unchanged "$out/logs/run$run-second.log"

  timed deploy_b "$run" playbook playbooks/deploy.yml -e "apply_layer_wheelhouse_dir=$out/wheelhouse-b"
  release_b=$(current_release)
  if [[ $release_b != */"$b_version"-* ]]; then
    echo "bench-deploy: after deploying B, current is $release_b, not a $b_version release" >&2
    exit 1
  fi
  timed rollback "$run" playbook playbooks/rollback.yml
  if [ "$(current_release)" != "$release_a" ]; then
    echo "bench-deploy: after the rollback, current is $(current_release), not $release_a" >&2
    exit 1
  fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "Deploy timings, seconds, $runs run(s) on $(nproc) cores, Debian $release containers; logs in $out/logs"
[ "$runs" -ge 3 ] || echo "BENCH_RUNS=$runs: a smoke try; report medians of 3 runs or more"
printf '%-28s' step
for run in $(seq 1 "$runs"); do printf ' %7s' "run $run"; done
printf ' %7s\n' median
for step in "${steps[@]}"; do
  values=()
  for run in $(seq 1 "$runs"); do values+=("${seconds[$step,$run]}"); done
  printf '%-28s' "${label[$step]}"
  printf ' %7s' "${values[@]}"
  printf ' %7s\n' "$(median "${values[@]}")"
done
echo "load average (1, 5, 15 min): at start $load_start, at end $load_end"
