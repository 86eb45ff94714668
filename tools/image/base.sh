#!/usr/bin/env bash
# Makes a Python base image from Debian's packages, offline from any container registry, and
# imports it into podman (or docker): `tools/image/base.sh NAME` (`make image-base`).
#
# The Dockerfile's default base is the official python image from Docker Hub. Where no registry
# is reachable (this project's CI), this builds an equivalent from the Debian archive instead:
# bookworm's python3 (3.11), pip and venv, CA certificates, tzdata, netbase, nothing else, and no
# documentation. `make image BASE_IMAGE=NAME` then builds the operator on it. The package
# versions are whatever bookworm serves that day; SOURCE_DATE_EPOCH makes the tarball itself
# reproducible for a given archive state.
set -euo pipefail

name="${1:?usage: base.sh IMAGE-NAME}"
engine="${CONTAINER_ENGINE:-podman}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

command -v mmdebstrap >/dev/null || {
    echo "image-base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2
    exit 1
}
if [[ "${FORCE:-0}" != 1 ]] && "$engine" image inspect "$name" >/dev/null 2>&1; then
    echo "image-base: $name exists (FORCE=1 rebuilds it)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(date -d 2026-01-01 +%s)}"
mmdebstrap --quiet --variant=minbase --format=tar \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,netbase,tzdata \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$work/rootfs.tar" "$mirror"
"$engine" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "Debian $suite minbase with python3, from $mirror" \
    "$work/rootfs.tar" "$name" >/dev/null
echo "image-base: $name made in $(( $(date +%s) - start )) s ($("$engine" image inspect --format '{{.Size}}' "$name") bytes)"
