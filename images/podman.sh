#!/usr/bin/env bash
# podman with snapmover's private image store: `images/podman.sh <podman args>`.
# The store (images, layers, build cache) lives under ${SNAPMOVER_CACHE:-~/.cache/snapmover}/images,
# apart from any other podman use on the machine, and images/containers.conf (runc, cgroupfs, lower
# ulimits) is selected through CONTAINERS_CONF: nothing under /etc or /var/lib/containers changes.
# Used by images/build.sh and tests/e2e/test_image.py; handy for `images/podman.sh images`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
store=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}/images
mkdir -p "$store/storage" "$store/run" "$store/tmp"
export CONTAINERS_CONF="$here/containers.conf"
exec podman --root "$store/storage" --runroot "$store/run" --tmpdir "$store/tmp" \
    --storage-driver overlay "$@"
