"""``python -m tests.cluster up|down|status [--state DIR]``: the local test cluster from a shell.

``up`` starts etcd, kube-apiserver, kube-controller-manager, the real node (kube-scheduler,
kubelet, containerd; the image ``make images`` built imported; ``--nodes 2``: a second one,
``node-2``, in a mount namespace of its own) and the CSI stand-in, installs the
VolumeSnapshot CRDs and default classes, and prints the ``export KUBECONFIG=…`` line; a machine
where the node cannot start gets one line naming the cause and exit status 1. ``down``
stops every process ``up`` started, by the PIDs it recorded. The default state directory is
``~/.cache/snapmover/cluster``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.cluster.cluster import LocalCluster, default_state_dir
from tests.cluster.node import NodeUnavailable


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", type=Path, default=default_state_dir())
    parser.add_argument("--nodes", type=int, choices=[1, 2], default=1, help="real nodes to start (up)")
    args = parser.parse_args()
    cluster = LocalCluster(args.state)
    if args.command == "up":
        try:
            if cluster.running():
                if args.nodes > 1:
                    cluster.add_second_node()
                print(f"cluster already running\nexport KUBECONFIG={cluster.kubeconfig}")
                return 0
            cluster.start(nodes=args.nodes)
        except NodeUnavailable as e:
            print(f"cluster-up: {e}", file=sys.stderr)
            return 1
        print(
            f"cluster up: API server {cluster.server}\nexport KUBECONFIG={cluster.kubeconfig}\n"
            "stop it with: make cluster-down"
        )
        return 0
    if args.command == "down":
        cluster.stop()
        print("cluster stopped")
        return 0
    running = cluster.running()
    print(f"cluster {'running' if running else 'not running'} (state {args.state})")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
