"""What a second real node takes of the host (tests/cluster/node.py), checked without starting one:
its own state directory, address, pod range, cgroup root and guard rule, and a kubelet identity
of its own in the API server's token file. The e2e side is tests/e2e/test_topology.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.cluster import node
from tests.cluster.controlplane import ControlPlane


def test_the_second_node_shares_nothing_of_the_first_but_the_bridge(tmp_path: Path) -> None:
    one, two = node.RealNode(tmp_path, "node-1"), node.RealNode(tmp_path, "node-2", index=2)
    assert one.primary and not two.primary
    assert one.dir != two.dir and one.sock != two.sock
    assert (one.ip, two.ip) == ("10.244.0.1", "10.244.0.2")
    assert (one.cgroup_root, two.cgroup_root) == ("snapmover-node", "snapmover-node-2")
    subnet = ipaddress.ip_network(node.POD_SUBNET)
    ranges = []
    for n in (one, two):
        first, last = (ipaddress.ip_address(a) for a in n.pod_range)
        assert first in subnet and last in subnet and first <= last
        assert not first <= ipaddress.ip_address(n.ip) <= last  # the node's own address is no pod's
        ranges.append(set(range(int(first), int(last) + 1)))
    assert not ranges[0] & ranges[1]
    assert int(ipaddress.ip_address(two.ip)) not in ranges[0]
    with pytest.raises(ValueError):
        node.RealNode(tmp_path, "node-9", index=9)


def test_each_node_has_its_own_counting_guard_rule(tmp_path: Path) -> None:
    if not node.UNIFIED.is_dir():
        pytest.skip("no unified cgroup hierarchy here: the guard counts every process")  # the rules differ only there
    first = node.RealNode(tmp_path, "node-1")._iptables_rules(6443)
    second = node.RealNode(tmp_path, "node-2", index=2)._iptables_rules(6443)

    def paths(rules: list[list[str]]) -> list[str]:
        return [rule[rule.index("--path") + 1] for rule in rules if "--path" in rule]

    assert paths(first) == ["snapmover-node"]
    assert paths(second) == ["snapmover-node-2"] and len(second) == 1  # the bridge's rules are the first node's
    assert second[0][:3] == ["filter", "OUTPUT", "-d"] and node.METADATA_RANGE in second[0]


@pytest.mark.parametrize(
    ("line", "root", "counts"),
    [
        ("3 180 REJECT all -- * * 0.0.0.0/0 169.254.0.0/16 cgroup snapmover-node /* g */", "snapmover-node", True),
        ("0 0 REJECT all -- * * 0.0.0.0/0 169.254.0.0/16 cgroup snapmover-node-2 /* g */", "snapmover-node", False),
        ("0 0 REJECT all -- * * 0.0.0.0/0 169.254.0.0/16 cgroup snapmover-node-2 /* g */", "snapmover-node-2", True),
        ("5 300 REJECT all -- * * 0.0.0.0/0 169.254.0.0/16 /* g */", "snapmover-node", False),
    ],
)
def test_a_nodes_packet_counter_is_read_from_its_own_rule(line: str, root: str, counts: bool) -> None:
    assert node._counts_cgroup(line, root) is counts


def test_the_second_nodes_kubelet_has_an_identity_of_its_own(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path, node_name="node-1", more_nodes=("node-2",))
    plane.pki.mkdir()
    (plane.pki / "tokens.csv").write_text(
        'a,admin,admin,"system:masters"\nb,system:node:node-1,kubelet,"system:nodes"\n'
        "c,system:kube-scheduler,scheduler\n"
        'd,system:node:node-2,kubelet-2,"system:nodes"\n'
    )
    assert plane.node_token("node-2") == "d" and plane.node_token("node-1") == "b"
    with pytest.raises(KeyError, match="node-3"):
        plane.node_token("node-3")
