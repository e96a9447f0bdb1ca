#!/usr/bin/env bash
# Setup step of `make test`: tests/unit/test_monitoring.py checks and unit-tests the PrometheusRule
# with `promtool`. It comes from Debian's `prometheus` package, unpacked (not installed, so no
# Prometheus service is started) into the shared cache; idempotent: instant once present.
set -euo pipefail
dest=${XDG_CACHE_HOME:-$HOME/.cache}/snapmover/prometheus
command -v promtool >/dev/null && exit 0
[ -x "$dest/usr/bin/promtool" ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "promtool: not found (install Prometheus' promtool with your package manager)" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "==> apt-get download prometheus (for promtool) into $dest"
(cd "$tmp" && apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; })
mkdir -p "$dest"
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
install -D -m 0755 "$tmp/x/usr/bin/promtool" "$dest/usr/bin/promtool"
"$dest/usr/bin/promtool" --version >/dev/null
