#!/usr/bin/env bash
# Setup step of `make test`: the e2e tests need the kube binaries (built once, then cached).
exec "$(dirname "$0")/../kube-build.sh"
