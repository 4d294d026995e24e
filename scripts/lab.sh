#!/usr/bin/env bash
# `make lab`: the whole stack in one systemd container named quantum-lab, deployed the way production
# is (playbooks/deploy.yml), with the exchange emulator in place of the exchange. Run it again to
# redeploy: the container is reused, and a deploy with nothing new changes nothing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
container=${QH_LAB_CONTAINER:-quantum-lab}
image=${QH_BASE_IMAGE:-quantum-hygiene/debian12-systemd:bookworm}
export ANSIBLE_CONFIG="$root/ansible.cfg"

bash scripts/ensure-docker.sh
bash scripts/build-image.sh
bash scripts/build-wheelhouse.sh

if [ -z "$(docker ps -q --filter "name=^${container}\$")" ]; then
  if [ -n "$(docker ps -aq --filter "name=^${container}\$")" ]; then
    echo "starting the existing container $container"
    docker start "$container" >/dev/null
  else
    echo "creating the container $container from $image"
    # systemd as PID 1: every capability but SYS_RESOURCE (--privileged fails here), as in
    # .config/molecule/config.yml. Ports are published on the host's loopback only.
    caps=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
      NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
      SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE
      AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ)
    docker run -d --name "$container" --hostname "$container" \
      --cap-drop ALL "${caps[@]/#/--cap-add=}" \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
      -p 127.0.0.1:8000:8000 -p 127.0.0.1:9090:9090 -p 127.0.0.1:9093:9093 \
      "$image" /lib/systemd/systemd >/dev/null
  fi
fi

# systemd waits for the container manager to share mounts; without it LoadCredential= cannot
# reach the services. A host does this at boot by itself.
for _ in $(seq 1 60); do
  state=$(docker exec "$container" systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 1
done
docker exec "$container" mount --make-rshared /

ansible-playbook -i inventories/lab playbooks/deploy.yml "$@"

cat <<EOF

The lab runs in the container $container.
  Apply layer metrics   http://127.0.0.1:8000/metrics
  Prometheus            http://127.0.0.1:9090   (targets: /targets, alerts: /alerts)
  Alertmanager          http://127.0.0.1:9093
  Status                docker exec $container quantum-apply-layer status
  Halt every order      ansible-playbook -i inventories/lab playbooks/kill_switch.yml -e kill_switch=on -e "reason='you: why'"
                        or: docker exec $container quantum-apply-layer kill on --reason 'you: why'
  Resume                ... -e kill_switch=off ...   or   docker exec $container quantum-apply-layer kill off --reason 'you: why'
  Roll back a release   ansible-playbook -i inventories/lab playbooks/rollback.yml
  Logs                  docker exec $container journalctl -u quantum-apply-layer -f
  Remove the lab        docker rm -f $container
EOF
