#!/usr/bin/env bash
# The body of `make test` (and so of CI): one-time machine setup steps from scripts/test.d/
# (each idempotent and cached: apt packages, the Kubernetes build), then the whole pytest suite
# except the slow reliability runs. Integration and e2e tests start their own servers; with
# SNAPMOVER_REQUIRE_SERVERS=1 a fixture that cannot start its server fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/test.d/*.sh; do
    [ -e "$step" ] || continue
    echo "==> setup: $step"
    "$step"
done
export SNAPMOVER_REQUIRE_SERVERS=1
export AWS_EC2_METADATA_DISABLED=true  # no test may ask a cloud metadata address (tests/conftest.py)
exec .venv/bin/python -m pytest tests -m "not slow" -q "$@"
