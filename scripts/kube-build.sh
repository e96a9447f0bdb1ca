#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet 1.20.2 from Debian
# bookworm's `kubernetes` source package, once per machine, for the local test cluster (tests/cluster/).
#
# The binaries are cached outside the checkout in ${SNAPMOVER_CACHE:-~/.cache/snapmover}/kube-1.20.2/
# together with SOURCE_VERSION, the Debian source version they were built from, and RECIPE, the
# version of this script's build steps; a later run finds all of them there and exits at once. A
# cache from an older recipe (fewer binaries, fewer source fixes) is rebuilt in the same tree and Go
# cache, so only what changed is compiled again (the 1.20 build cache keys hold absolute paths: a
# copied tree would rebuild nearly everything). The binaries are never committed.
#
# Why from source: no prebuilt Kubernetes server binary can be downloaded here, and Debian ships
# only kubectl. Two fixes of the vendored sources for Go 1.19 (1.20 was released for Go 1.15):
# - reflect2 v1.0.1 crashes kube-apiserver the first time it decodes a custom resource; Debian's
#   reflect2 1.0.2 sources replace it.
# - the OpenAPI type validator (kube-openapi, and the go-openapi copy beside it) treats any value
#   for which reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(v)) holds as null. Under Go 1.15
#   two reflect.Values never compare equal that way, so only a real null counted; under Go 1.19 a
#   decoded "" (and 0, false) does, so kube-apiserver rejected `""` in a custom resource ("must be
#   of type string: \"null\"") and a CRD's `default: ""`. The check is cut to `data == nil`, the
#   behaviour the code had with the Go it was written for (and upstream's later fix).
#
# Safe to run concurrently (`make test` and `make cluster-up` in two shells): a lock makes the
# second run wait for the first build instead of starting another one on the same 2 cores.
# Cold: ~4 min on 2 cores (plus apt downloads); prints progress while it works.
set -euo pipefail

KUBE_VERSION=1.20.2
# Bump when the build steps change what the binaries are (binaries, source fixes): older caches rebuild.
RECIPE=2
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
cache_root=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}
out=$cache_root/kube-$KUBE_VERSION
work=$cache_root/kube-build
packages=(golang-1.19-go etcd-server golang-github-modern-go-reflect2-dev make rsync openssl util-linux)

step() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cached() {
    local b
    for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done
    [ -s "$out/SOURCE_VERSION" ] && [ "$(cat "$out/RECIPE" 2>/dev/null)" = "$RECIPE" ]
}

install_packages() {
    local missing=() p sudo=""
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    step "apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The Debian source version of a downloaded source package (its .dsc), e.g. 1.20.5+really1.20.2-1.1+deb12u1.
source_version() {
    local dsc
    dsc=$(ls "$work"/kubernetes_*.dsc 2>/dev/null | head -n1)
    [ -n "$dsc" ] && sed -n 's/^Version: //p' "$dsc"
}

download_source() {
    # A private deb-src list derived from the system's own deb list: the system apt config is untouched.
    mkdir -p "$work/apt/lists/partial" "$work/apt/sources"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$work/apt/sources/src.sources"
    local apt_private=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/sources"
        -o "Dir::State::Lists=$work/apt/lists")
    step "downloading Debian bookworm's kubernetes source package"
    apt-get "${apt_private[@]}" update -qq
    (cd "$work" && apt-get "${apt_private[@]}" source --download-only -qq "kubernetes/bookworm")
}

# Runs "$@" while printing the elapsed time every 30 s (go build is silent for minutes).
with_heartbeat() {
    local t0=$SECONDS
    (while sleep 30; do step "still building ($((SECONDS - t0)) s)"; done) &
    local beat=$! rc=0
    "$@" || rc=$?
    kill "$beat" 2>/dev/null || true
    wait "$beat" 2>/dev/null || true
    return $rc
}

build() {
    local tree=$work/kubernetes-$KUBE_VERSION
    if [ ! -d "$tree" ]; then
        step "unpacking"
        tar -C "$work" -xf "$work"/kubernetes_*.orig.tar.*
    fi
    [ -d "$tree/vendor" ] || { echo "kube-build: $tree has no vendor/ (not the complete bookworm tree)" >&2; exit 1; }
    step "replacing vendored reflect2 v1.0.1 with Debian's 1.0.2 sources"
    local vendored=$tree/vendor/github.com/modern-go/reflect2 debian=/usr/share/gocode/src/github.com/modern-go/reflect2
    rm -f "$vendored"/*.go "$vendored"/*.s
    cp "$debian"/*.go "$debian"/*.s "$vendored/"
    step "OpenAPI type validator: only a real null is null (Go 1.19 made decoded \"\" look like one)"
    local v
    for v in "$tree/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go" \
        "$tree/vendor/github.com/go-openapi/validate/type.go"; do
        sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$v"
        grep -q 'reflect.Zero(reflect.TypeOf(data))' "$v" && { echo "kube-build: could not patch $v" >&2; exit 1; }
    done

    mkdir -p "$work/gopath/src/k8s.io" "$work/home" "$work/gocache"
    ln -sfn "$tree" "$work/gopath/src/k8s.io/kubernetes"
    step "building ${binaries[*]} (about 6 minutes cold on 2 cores, 2 incremental)"
    (
        cd "$work/gopath/src/k8s.io/kubernetes"
        export PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPATH=$work/gopath \
            GOCACHE=$work/gocache HOME=$work/home
        with_heartbeat make WHAT="${binaries[*]/#/cmd/}" 2>&1 | sed -u 's/^/    /'
    )
    # Install atomically: a half-copied binary must never look cached.
    local staging=$out.partial
    rm -rf "$staging"
    mkdir -p "$staging"
    local b
    for b in "${binaries[@]}"; do cp "$tree/_output/bin/$b" "$staging/"; done
    source_version >"$staging/SOURCE_VERSION"
    echo "$RECIPE" >"$staging/RECIPE"
    rm -rf "$out"
    mv "$staging" "$out"
}

mkdir -p "$cache_root"
exec 9>"$cache_root/kube-build.lock"
if ! flock -n 9; then
    step "another kube build is running; waiting for it"
    flock 9
fi

install_packages
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ ! -s "$out/SOURCE_VERSION" ] &&
    [ -n "$(source_version)" ]; then
    # binaries of an earlier version of this script, built from the source package still beside them
    source_version >"$out/SOURCE_VERSION"
fi
if cached; then
    echo "==> kube $KUBE_VERSION binaries cached in $out (Debian source $(cat "$out/SOURCE_VERSION"), recipe $RECIPE)"
    exit 0
fi

t0=$SECONDS
mkdir -p "$work"
[ -n "$(source_version)" ] || download_source
case "$(source_version)" in
*really$KUBE_VERSION-*) ;;
*) echo "kube-build: expected a kubernetes source package of upstream $KUBE_VERSION, got '$(source_version)'" >&2; exit 1 ;;
esac
build
step "cached in $out (Debian source $(cat "$out/SOURCE_VERSION"), $((SECONDS - t0)) s)"
