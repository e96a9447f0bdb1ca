#!/usr/bin/env bash
# Build the snapmover image (`make images`) and write it as an OCI archive under build/images/.
#
#   images/build.sh            build, save build/images/snapmover-<version>.oci.tar, smoke-test it
#
# Engine: docker when `docker info` answers, else podman, else buildah; none present → podman and
# friends are installed from Debian (images/install-tools.sh). podman and buildah use a private
# store (images/podman.sh), so nothing global changes.
# Base: $SNAPMOVER_BASE when set (e.g. python:3.11-slim from your registry); else python:3.11-slim
# when it can be pulled; else an equivalent base made here with debootstrap (Debian bookworm
# minbase + python3, python3-venv, ca-certificates) from the host's configured Debian mirror.
# Dependencies: the wheels pinned in images/requirements.lock are downloaded on the host (checked
# against its hashes) into the build context, so the build itself runs with --network=none.
# Everything slow is cached under ${SNAPMOVER_CACHE:-~/.cache/snapmover}/images: the debootstrap
# base (rootfs tarball + imported image), the wheels (per lock file), the layer cache.
#
# Environment: SNAPMOVER_ENGINE=docker|podman|buildah, SNAPMOVER_BASE=<image>,
# SNAPMOVER_IMAGE=<name, default localhost/snapmover>, SNAPMOVER_IMAGES_OUT=<dir>.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/images"
cache=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}/images
out=${SNAPMOVER_IMAGES_OUT:-$root/build/images}
image=${SNAPMOVER_IMAGE:-localhost/snapmover}
registry_base=docker.io/library/python:3.11-slim
local_base=localhost/snapmover-base:bookworm
base_packages=python3,python3-venv,ca-certificates
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
export CONTAINERS_CONF="$here/containers.conf"

say() { printf '==> %s\n' "$*"; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }
mkdir -p "$cache" "$out"
exec 9>"$cache/build.lock"
flock 9 # one build per cache at a time (tests and `make images` may run together)

# --- engine: e_<verb> functions hide the differences between docker, podman and buildah ---
store_flags=(--root "$cache/storage" --runroot "$cache/run" --storage-driver overlay)
pick_engine() {
    if [ -n "${SNAPMOVER_ENGINE:-}" ]; then echo "$SNAPMOVER_ENGINE"
    elif command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then echo docker
    elif command -v podman >/dev/null; then echo podman
    elif command -v buildah >/dev/null; then echo buildah
    else echo install
    fi
}
engine=$(pick_engine)
if [ "$engine" = install ] || { [ "$engine" = podman ] && ! command -v podman >/dev/null; }; then
    "$here/install-tools.sh"
    engine=podman
fi
case "$engine" in
docker)
    e() { docker "$@"; }
    e_exists() { docker image inspect "$1" >/dev/null 2>&1; }
    e_import() { docker import --change "ENV PATH=$2" --change 'CMD ["/bin/bash"]' "$3" "$1" >/dev/null; }
    e_build() { DOCKER_BUILDKIT=1 docker build "$@"; }
    e_save() { docker save -o "$2" "$1"; } # an OCI image layout tar since Docker 25
    ;;
podman)
    e() { "$here/podman.sh" "$@"; }
    e_exists() { e image exists "$1"; }
    e_import() { e import --change "ENV PATH=$2" --change 'CMD ["/bin/bash"]' "$3" "$1" >/dev/null; }
    e_build() { e build --network=none --layers "$@"; }
    e_save() { e save --format oci-archive -o "$2" "$1"; }
    ;;
buildah)
    e() { buildah "${store_flags[@]}" "$@"; }
    e_exists() { e inspect --type image "$1" >/dev/null 2>&1; }
    e_import() {
        local c
        c=$(e from scratch)
        e add "$c" "$3" / >/dev/null
        e config --env "PATH=$2" --cmd /bin/bash "$c"
        e commit --quiet --rm "$c" "$1" >/dev/null
    }
    e_build() { e bud --isolation chroot --network=none --layers "$@"; }
    e_save() { e push --quiet "$1" "oci-archive:$2:$1"; }
    ;;
*) die "unknown SNAPMOVER_ENGINE=$engine (docker, podman or buildah)" ;;
esac
say "engine: $engine"

# --- base image ---
debian_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -r "$f" ]; then awk '/^URIs:/ {print $2; exit}' "$f"
    elif [ -r /etc/apt/sources.list ]; then awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list
    fi
}
make_local_base() {
    # Debian bookworm minbase with CPython 3.11 (the same Python as python:3.11-slim), trimmed of
    # apt lists, package caches, docs and man pages. The rootfs tarball is cached by its recipe.
    local key tarball mirror rootfs
    key=$(printf '%s\n' bookworm minbase "$base_packages" trim-v1 | sha256sum | cut -c1-12)
    tarball="$cache/base-bookworm-$key.tar"
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || "$here/install-tools.sh"
        mirror=$(debian_mirror)
        [ -n "$mirror" ] || die "no Debian mirror configured in /etc/apt (needed by debootstrap)"
        rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        say "debootstrap bookworm ($base_packages) from the host's Debian mirror (~45 s, once)"
        debootstrap --variant=minbase --include="$base_packages" bookworm "$rootfs" "$mirror" \
            >"$cache/debootstrap.log" 2>&1 || die "debootstrap failed, see $cache/debootstrap.log"
        rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
            "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/dev/*
        find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
        tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    say "import $tarball as $local_base"
    e_import "$local_base" /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$tarball"
}
pick_base() {
    if [ -n "${SNAPMOVER_BASE:-}" ]; then echo "$SNAPMOVER_BASE"; return; fi
    if [ "$engine" = docker ] || e_exists "$registry_base"; then echo "$registry_base"; return; fi
    if e_exists "$local_base"; then echo "$local_base"; return; fi
    if timeout 60 "${e_pull[@]}" "$registry_base" >/dev/null 2>&1; then echo "$registry_base"; return; fi
    echo "$local_base"
}
case "$engine" in docker) e_pull=(docker pull -q) ;; podman) e_pull=("$here/podman.sh" pull -q) ;;
    buildah) e_pull=(buildah "${store_flags[@]}" pull -q) ;; esac
base=$(pick_base)
if [ "$base" = "$local_base" ] && ! e_exists "$local_base"; then
    say "$registry_base cannot be pulled here: making an equivalent base locally"
    make_local_base
fi
say "base: $base"

# --- build context: lock file, pinned wheels (cached per lock), the snapmover wheel ---
lock="$here/requirements.lock"
arch=$(uname -m)
wheels="$cache/wheels/$(cat "$lock" | sha256sum | cut -c1-12)-$arch"
if [ ! -e "$wheels/.complete" ]; then
    say "download the pinned wheels (cp311, manylinux $arch) into $wheels"
    platforms=()
    for v in $(seq 5 36); do platforms+=(--platform "manylinux_2_${v}_$arch"); done
    rm -rf "$wheels" && mkdir -p "$wheels"
    "$python" -m pip download --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
        --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        "${platforms[@]}" --platform "manylinux2014_$arch" -d "$wheels" -r "$lock"
    touch "$wheels/.complete"
fi
context="$out/context"
rm -rf "$context" && mkdir -p "$context/wheels" "$context/dist"
cp "$lock" "$context/requirements.lock"
cp -l "$wheels"/*.whl "$context/wheels/" 2>/dev/null || cp "$wheels"/*.whl "$context/wheels/"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
# Build from a copy of the package sources so no stale build/lib output can leak into the wheel;
# a fixed SOURCE_DATE_EPOCH makes the wheel byte-identical when the code is, so the layer cache hits.
(cd "$root" && cp -rp pyproject.toml README.md jobs launcher "$src/")
find "$src" -name __pycache__ -prune -exec rm -rf {} +
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    -w "$context/dist" "$src" >/dev/null
version=$(cd "$context/dist" && ls snapmover-*.whl | sed -E 's/^snapmover-([^-]+)-.*/\1/')
revision=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$root" status --porcelain -- jobs launcher pyproject.toml 2>/dev/null)" ] ||
    revision="$revision-dirty"
created=$(git -C "$root" log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)

# --- build, save, smoke test ---
say "build $image:$version"
e_build -f "$here/Containerfile" --build-arg "BASE=$base" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
    -t "$image:$version" -t "$image:latest" "$context"
archive="$out/snapmover-$version.oci.tar"
id=$(e image inspect --format '{{.Id}}' "$image:$version" 2>/dev/null || e inspect --type image --format '{{.FromImageID}}' "$image:$version")
if [ ! -s "$archive" ] || [ "$(cat "$archive.id" 2>/dev/null)" != "$id" ]; then
    say "save $archive"
    rm -f "$archive"
    e_save "$image:$version" "$archive.tmp" && mv "$archive.tmp" "$archive"
    echo "$id" >"$archive.id"
fi
if [ "$engine" != buildah ]; then
    printf '==> smoke test: snapmover --version → %s\n' "$(e run --rm --network=none "$image:$version" --version)"
fi
printf '==> %s  %s MiB  (%s:%s, base %s)\n' "${archive#"$root"/}" \
    "$(($(stat -c %s "$archive") / 1048576))" "$image" "$version" "$base"
