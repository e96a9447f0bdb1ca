#!/usr/bin/env bash
# Install the daemonless image tools from Debian when missing (idempotent, ~10 s the first time):
# podman + buildah + skopeo to build, save and run images, runc (crun rejects this kind of host's
# cgroup setup), uidmap, and debootstrap to make a Python base where no registry can be reached.
# Called by images/build.sh when no usable engine is present, and by scripts/test.d/30-images.sh.
set -euo pipefail
packages=(podman buildah skopeo runc uidmap debootstrap)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "images: need ${missing[*]} (no apt-get here: install them with your package manager)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "images: need ${missing[*]}: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "==> apt-get install ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
