#!/usr/bin/env bash
# Regenerate images/requirements.lock from pyproject.toml's [project].dependencies (`make
# images-lock`): pip-compile resolves them against PyPI and records every published file's hash.
# pip-tools lives in its own venv under the cache, so the project's .venv stays as it is.
# Takes a few minutes (it fetches every candidate's hashes); run it after changing dependencies.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=${SNAPMOVER_CACHE:-$HOME/.cache/snapmover}/tools/pip-tools
[ -x "$tools/bin/pip-compile" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q pip-tools; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root/pyproject.toml" "$work/"
# Resolve against PyPI only: no machine-local find-links or extra indexes in the hashes.
(cd "$work" && env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$tools/bin/pip-compile" --quiet \
    --generate-hashes --strip-extras --allow-unsafe --no-header --output-file requirements.lock pyproject.toml)
{
    sed -n '1,/^[^#]/{/^#/p}' "$root/images/requirements.lock"
    cat "$work/requirements.lock"
} >"$work/out" && mv "$work/out" "$root/images/requirements.lock"
echo "==> images/requirements.lock: $(grep -c '^[a-z]' "$root/images/requirements.lock") packages"
