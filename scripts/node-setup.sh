#!/usr/bin/env bash
# Machine setup for the test cluster's real node (tests/cluster/): the container runtime from
# Debian (containerd, runc, the CNI plugins in /usr/lib/cni), the host tools the node's network
# and Block volumes use, and the CRI sandbox ("pause") image, built here because no registry can
# be reached. Idempotent and cached: instant once done. Called by scripts/test.d/25-node.sh and
# by `make cluster-up`.
#
# The pause image is a static binary compiled with gcc from the Kubernetes tree's own
# build/pause/linux/pause.c (the tree scripts/kube-build.sh unpacks), packed as a one-layer OCI
# archive named localhost/pause:$PAUSE_TAG, the file `ctr images import` takes. Cached in
# ${SNAPMOVER_CACHE:-~/.cache/snapmover}/node/.
set -euo pipefail

KUBE_VERSION=1.20.2
PAUSE_TAG=3.4 # the tag of build/pause/Makefile in the 1.20.2 tree
cache_root=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}
out=$cache_root/node
pause_archive=$out/pause-$PAUSE_TAG.oci.tar
tree=$cache_root/kube-build/kubernetes-$KUBE_VERSION
packages=(containerd runc containernetworking-plugins iptables iproute2 util-linux gcc libc6-dev)

die() { printf 'node-setup: %s\n' "$*" >&2; exit 1; }

install_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "need ${missing[*]} (no apt-get here: install them with your package manager)"
    [ "$(id -u)" -eq 0 ] || die "need ${missing[*]}: run as root, or: sudo apt-get install ${missing[*]}"
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# blob FILE: moves FILE into blobs/sha256/ under its digest and prints "DIGEST SIZE".
blob() {
    local digest size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "blobs/sha256/$digest"
    echo "$digest $size"
}

build_pause() {
    local src=$tree/build/pause/linux/pause.c work
    [ -f "$src" ] || "$(dirname "$0")/kube-build.sh"
    [ -f "$src" ] || die "$src missing after scripts/kube-build.sh"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    echo "==> building the pause image (gcc -static from the tree's $(basename "$src"))"
    mkdir -p "$work/root" "$work/oci/blobs/sha256"
    gcc -Os -Wall -Werror -static "-DVERSION=v$PAUSE_TAG-snapmover" -o "$work/root/pause" "$src"
    strip "$work/root/pause"
    (
        cd "$work/oci"
        tar -C "$work/root" --numeric-owner --owner=0 --group=0 --mtime=@0 -cf layer.tar pause
        local layer config manifest arch
        layer=$(blob layer.tar)
        arch=$(dpkg --print-architecture)
        printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
            "$arch" "${layer% *}" >config.json
        config=$(blob config.json)
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
            "${config% *}" "${config#* }" "${layer% *}" "${layer#* }" >manifest.json
        manifest=$(blob manifest.json)
        printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"localhost/pause:%s","org.opencontainers.image.ref.name":"%s"}}]}' \
            "${manifest% *}" "${manifest#* }" "$PAUSE_TAG" "$PAUSE_TAG" >index.json
        echo '{"imageLayoutVersion":"1.0.0"}' >oci-layout
        tar --numeric-owner --owner=0 --group=0 --mtime=@0 -cf "$work/pause.oci.tar" oci-layout index.json blobs
    )
    mkdir -p "$out"
    cp "$work/pause.oci.tar" "$pause_archive.partial"
    mv "$pause_archive.partial" "$pause_archive"
}

install_packages
[ -s "$pause_archive" ] || build_pause
echo "==> node runtime installed (containerd $(containerd --version | awk '{print $3}'), pause image $pause_archive)"
