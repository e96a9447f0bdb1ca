#!/usr/bin/env bash
# Setup step of `make test`: the test cluster's node runtime (containerd, runc, CNI plugins) and its
# locally built pause image (idempotent, cached).
exec "$(dirname "$0")/../node-setup.sh"
