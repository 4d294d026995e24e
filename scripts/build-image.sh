#!/usr/bin/env bash
# Build the Debian systemd base image that molecule and the lab start from, for one suite:
#   scripts/build-image.sh trixie     Debian 13, image quantum-hygiene/debian13-systemd:trixie
#   scripts/build-image.sh bookworm   Debian 12, image quantum-hygiene/debian12-systemd:bookworm
# No registry can be pulled from here, so the root file system is made with debootstrap from this
# machine's own Debian mirror (read from its apt sources) and imported. Skipped when the image exists;
# FORCE=1 rebuilds it.
set -euo pipefail

suite=${1:-}
case $suite in
  bookworm) release=12 ;;
  trixie) release=13 ;;
  *)
    echo "build-image: say which Debian suite to build: bookworm (Debian 12) or trixie (Debian 13); got '$suite'" >&2
    exit 1
    ;;
esac
image="quantum-hygiene/debian$release-systemd:$suite"
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"
  exit 0
fi

# The first Debian mirror of the apt sources, from deb822 sources or the classic list; every suite of
# Debian lies under the same URI.
mirror_candidates() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk '/^URIs:/ {print $2}' "$f"
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' /etc/apt/sources.list
  fi
  return 0
}
mirror=$(mirror_candidates | grep -v -- '-security' | head -n 1)
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list(.d); configure apt first" >&2
  exit 1
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite from $mirror"
# kmod: without it systemd-modules-load fails and systemd 257 (trixie) boots `degraded`.
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,kmod,python3,python3-apt,sudo,iproute2,procps \
  "$suite" "$rootfs" "$mirror" >/dev/null
# Containers have no console to log in on; these units only fail or wait there.
rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* \
  "$rootfs"/lib/systemd/system/multi-user.target.wants/getty.target
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' --change 'ENV container=docker' - "$image" >/dev/null
echo "built $image"
