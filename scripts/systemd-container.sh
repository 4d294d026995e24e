# shellcheck shell=bash
# Sourced by scripts/lab.sh and scripts/bench-deploy.sh: a container that boots systemd as PID 1 from
# the base image (scripts/build-image.sh), started the way .config/molecule/config.yml starts molecule's.

# debian_suite RELEASE: the suite of a supported Debian release (12 or 13), or a clear error.
debian_suite() {
  case $1 in
    12) echo bookworm ;;
    13) echo trixie ;;
    *)
      echo "Debian release '$1' is not supported: say 13 (trixie) or 12 (bookworm), e.g. make lab DEBIAN=12" >&2
      return 1
      ;;
  esac
}

# debian_image RELEASE: the base image scripts/build-image.sh builds for it.
debian_image() {
  local suite
  suite=$(debian_suite "$1") || return 1
  echo "quantum-hygiene/debian$1-systemd:$suite"
}

# systemd_capabilities: every capability but SYS_RESOURCE (--privileged fails here), one a line, from
# the list molecule's containers get too (QH_SYSTEMD_CAPABILITIES in .env.yml): written once.
systemd_capabilities() {
  local env_file
  env_file="$(dirname "${BASH_SOURCE[0]}")/../.env.yml"
  sed -n '/^QH_SYSTEMD_CAPABILITIES:/,/]/p' "$env_file" | sed 1d | tr -d '[],' | tr -s ' ' '\n' | sed '/^$/d'
}

# systemd_container_create NAME IMAGE [docker run options...]
systemd_container_create() {
  local name=$1 image=$2 caps
  shift 2
  mapfile -t caps < <(systemd_capabilities)
  if ((${#caps[@]} < 30)); then
    echo "systemd_container_create: no capability list in .env.yml (QH_SYSTEMD_CAPABILITIES)" >&2
    return 1
  fi
  docker run -d --name "$name" --hostname "$name" \
    --cap-drop ALL "${caps[@]/#/--cap-add=}" \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    "$@" "$image" /lib/systemd/systemd >/dev/null
}

# systemd_container_ready NAME: wait for systemd to boot, then share mounts as a host's systemd does.
# systemd waits for the container manager to share mounts; without it LoadCredential= cannot
# reach the services. A host does this at boot by itself.
systemd_container_ready() {
  local name=$1 state
  for _ in $(seq 1 60); do
    state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 1
  done
  docker exec "$name" mount --make-rshared /
}
