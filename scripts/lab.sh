#!/usr/bin/env bash
# `make lab`: the whole stack in one systemd container named quantum-lab, deployed the way production
# is (playbooks/deploy.yml), with the exchange emulator in place of the exchange. Run it again to
# redeploy: the container is reused, and a deploy with nothing new changes nothing.
# QH_DEBIAN (`make lab DEBIAN=12`) says which Debian release the container runs: 13 (default) or 12.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
container=${QH_LAB_CONTAINER:-quantum-lab}
export ANSIBLE_CONFIG="$root/ansible.cfg"
# shellcheck source=systemd-container.sh source-path=SCRIPTDIR disable=SC1091 # checked on its own too
source "$root/scripts/systemd-container.sh"
release=${QH_DEBIAN:-13}
suite=$(debian_suite "$release")
image=$(debian_image "$release")

bash scripts/ensure-docker.sh
bash scripts/build-image.sh "$suite"
bash scripts/build-wheelhouse.sh

# A lab made from another release is not silently reused: the operator decides what happens to it.
existing_image=$(docker inspect --format '{{.Config.Image}}' "$container" 2>/dev/null || true)
if [ -n "$existing_image" ] && [ "$existing_image" != "$image" ]; then
  echo "The container $container runs $existing_image, not Debian $release ($image)." >&2
  echo "Remove it to make a new lab (docker rm -f $container), or keep it with make lab DEBIAN=<its release>." >&2
  exit 1
fi

if [ -z "$(docker ps -q --filter "name=^${container}\$")" ]; then
  if [ -n "$(docker ps -aq --filter "name=^${container}\$")" ]; then
    echo "starting the existing container $container"
    docker start "$container" >/dev/null
  else
    echo "creating the container $container from $image"
    # Ports are published on the host's loopback only.
    systemd_container_create "$container" "$image" \
      -p 127.0.0.1:8000:8000 -p 127.0.0.1:9090:9090 -p 127.0.0.1:9093:9093
  fi
fi
systemd_container_ready "$container"

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
