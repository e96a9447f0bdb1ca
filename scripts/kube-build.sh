#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager 1.20.2 from Debian bookworm's `kubernetes`
# source package, once per machine. The binaries are cached outside the checkout in
# ${SNAPMOVER_CACHE:-~/.cache/snapmover}/kube-<version>/ and reused by every later run.
#
# Why from source: no prebuilt kube-apiserver can be downloaded here, and Debian ships only
# kubectl. The vendored reflect2 v1.0.1 crashes kube-apiserver built with Go >= 1.18 when it
# decodes a custom resource; Debian's reflect2 1.0.2 sources replace it.
# Idempotent: exits at once when the cached binaries exist. Prints progress while it works.
set -euo pipefail

KUBE_VERSION=1.20.2
cache_root=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}
out=$cache_root/kube-$KUBE_VERSION
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && command -v etcd >/dev/null; then
    echo "==> kube $KUBE_VERSION binaries cached in $out"
    exit 0
fi

step() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

packages=(golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev make rsync openssl util-linux)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ]; then
    exit 0
fi

work=$cache_root/kube-build
mkdir -p "$work/apt/lists/partial" "$work/apt/sources" "$out"
# A private deb-src list derived from the system's own deb list: the system apt config is untouched.
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$work/apt/sources/src.sources"
apt_private=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/sources"
    -o "Dir::State::Lists=$work/apt/lists")
cd "$work"
if ! ls kubernetes_*.orig.tar.* >/dev/null 2>&1; then
    step "downloading Debian's kubernetes source package"
    apt-get "${apt_private[@]}" update -qq
    apt-get "${apt_private[@]}" source --download-only -qq "kubernetes/bookworm" 2>/dev/null ||
        apt-get "${apt_private[@]}" source --download-only -qq kubernetes
fi
if [ ! -d "kubernetes-$KUBE_VERSION" ]; then
    step "unpacking"
    tar -xf kubernetes_*.orig.tar.*
fi
tree=$work/kubernetes-$KUBE_VERSION
step "replacing vendored reflect2 with Debian's 1.0.2 sources"
vendored=$tree/vendor/github.com/modern-go/reflect2
rm -f "$vendored"/*.go "$vendored"/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s \
    "$vendored/"

mkdir -p "$work/gopath/src/k8s.io" "$work/home" "$work/gocache"
ln -sfn "$tree" "$work/gopath/src/k8s.io/kubernetes"
step "building kube-apiserver and kube-controller-manager (about 4 minutes on 2 cores)"
(
    cd "$work/gopath/src/k8s.io/kubernetes"
    export PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPATH=$work/gopath \
        GOCACHE=$work/gocache HOME=$work/home
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" 2>&1 | while IFS= read -r line; do
        printf '    %s\n' "$line"
    done
)
cp "$tree/_output/bin/kube-apiserver" "$tree/_output/bin/kube-controller-manager" "$out/"
step "cached in $out"
