"""`snapmover doctor --cluster`'s checks against the real test apiserver: an identity without the
launcher's RBAC fails one line per missing permission (SelfSubjectAccessReview under
impersonation), the cluster admin passes; a CSI StorageClass without a VolumeSnapshotClass for
its driver fails, and passes once one exists."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobs.kube.preflight import LAUNCHER_PERMISSIONS, rbac_checks, snapshot_class_checks
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e


def test_rbac_of_an_unbound_service_account_fails_and_admin_passes(
    kube_cluster: ClusterHandle, k8s_namespace: str
) -> None:
    kube_cluster.kubectl("-n", k8s_namespace, "create", "serviceaccount", "nobody")
    api = kube_cluster.api_client()
    try:
        api.default_headers["Impersonate-User"] = f"system:serviceaccount:{k8s_namespace}:nobody"
        denied = list(rbac_checks(api, k8s_namespace))
        assert len(denied) == len(LAUNCHER_PERMISSIONS) and not any(r.ok for r in denied)
        assert any(r.detail == f"not allowed to create jobs.batch in namespace {k8s_namespace}" for r in denied)
        assert all("rbac.yaml" in r.fix for r in denied)
        del api.default_headers["Impersonate-User"]
        (granted,) = rbac_checks(api, k8s_namespace)
        assert granted.ok and str(len(LAUNCHER_PERMISSIONS)) in granted.detail
    finally:
        api.close()


def _results(api: Any, driver: str) -> list[Any]:
    return [r for r in snapshot_class_checks(api) if driver in r.detail]


def test_csi_driver_without_a_snapshot_class(kube_cluster: ClusterHandle) -> None:
    driver = f"doctor-{uuid.uuid4().hex[:8]}.csi.test"
    sc, vsc = f"sc-{driver.split('.', maxsplit=1)[0]}", f"vsc-{driver.split('.', maxsplit=1)[0]}"
    kube_cluster.kubectl(
        "apply", "-f", "-",
        input=f"apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {sc}}}\nprovisioner: {driver}\n",
    )  # fmt: skip
    api = kube_cluster.api_client()
    try:
        (missing,) = _results(api, driver)
        assert not missing.ok and f"driver: {driver}" in missing.fix
        kube_cluster.kubectl(
            "apply", "-f", "-",
            input=(
                "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\n"
                f"metadata: {{name: {vsc}}}\ndriver: {driver}\ndeletionPolicy: Delete\n"
            ),
        )  # fmt: skip
        (present,) = _results(api, driver)
        assert present.ok
    finally:
        api.close()
        kube_cluster.kubectl("delete", "storageclass", sc, "--wait=false", check=False)
        kube_cluster.kubectl("delete", "volumesnapshotclass", vsc, "--wait=false", check=False)
