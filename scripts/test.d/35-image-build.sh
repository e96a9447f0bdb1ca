#!/usr/bin/env bash
# Setup step of `make test`: the snapmover image (build/images/*.oci.tar, what `make images` makes),
# which the test cluster's real node imports at start — every mover, launcher and test pod runs from
# it, so it is rebuilt from this checkout before the tests (cached: ~10 s when nothing changed).
exec "$(dirname "$0")/../../images/build.sh"
