#!/usr/bin/env bash
# Setup step of `make test`: tests/e2e/test_image.py builds and runs the image with podman, so the
# daemonless tools must be installed (from Debian, idempotent: instant once present). The image
# itself is built (and cached) by the test.
exec "$(dirname "$0")/../../images/install-tools.sh"
