#!/usr/bin/env bash
# Prints the container engine to build with: docker or podman, the first whose engine answers
# (`docker` is often a client with no daemon behind it). Prints nothing and fails when neither
# works. `make image` uses it unless CONTAINER_ENGINE is set.
set -uo pipefail
# podman needs the settings in containers.conf here to work at all on some machines.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(dirname "${BASH_SOURCE[0]}")/containers.conf}"
for engine in docker podman; do
    command -v "$engine" >/dev/null || continue
    if timeout 20 "$engine" info >/dev/null 2>&1; then
        echo "$engine"
        exit 0
    fi
done
exit 1
