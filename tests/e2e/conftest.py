"""e2e fixtures: Velero's CRDs (from manifests/crd) installed once per test cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.cluster import ClusterHandle

CRD_DIR = Path(__file__).parents[2] / "manifests" / "crd"


@pytest.fixture(scope="session")
def velero_crds(kube_cluster: ClusterHandle) -> ClusterHandle:
    kube_cluster.kubectl("apply", "-k", str(CRD_DIR))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/datauploads.velero.io",
        "crd/datadownloads.velero.io",
        "crd/backupstoragelocations.velero.io",
    )
    return kube_cluster
