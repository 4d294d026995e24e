#!/usr/bin/env bash
# Make a Docker engine available: install docker.io and debootstrap if missing, start dockerd if none answers.
# Nothing here can pull an image; scripts/build-image.sh builds the one base image we use.
set -euo pipefail

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

log=${DOCKERD_LOG:-/var/log/dockerd.log}
echo "starting dockerd in the background (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; see $log" >&2
exit 1
