"""e2e fixtures: Velero's CRDs (from manifests/crd) installed once per test cluster, and ``env``:
a fresh namespace pair with a running launcher (tests/e2e/launcher_env.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.launcher_env import LauncherEnv, launcher_env
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


@pytest.fixture
def env(velero_crds: ClusterHandle, tmp_path: Path) -> Iterator[LauncherEnv]:
    with launcher_env(velero_crds, tmp_path) as e:
        e.start_launcher()
        yield e
