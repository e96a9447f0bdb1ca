#!/usr/bin/env bash
# Create the project virtualenv and install snapmover + dev dependencies into it.
# Idempotent: pip's wheel cache (~/.cache/pip) makes re-runs fast; the Makefile re-runs this only
# when pyproject.toml changes.
set -euo pipefail
venv=${1:-.venv}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
echo "==> installing snapmover and dev dependencies into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
touch "$venv/.stamp"
