"""launcher.validation: every field of a CR is checked before anything is done (plain dicts)."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.validation import label_problem, spec_problem, subdomain_problem

SNAPSHOT = "0123456789abcdef" * 4


def du(**spec: Any) -> dict[str, Any]:
    base = {
        "datamover": "snapmover",
        "backupStorageLocation": "default",
        "sourceNamespace": "app",
        "sourcePVC": "data",
        "snapshotType": "CSI",
        "csiSnapshot": {"volumeSnapshot": "snap", "storageClass": "standard", "snapshotClass": "csi.class"},
        "operationTimeout": "10m0s",
        "dataMoverConfig": {"ParallelFilesUpload": "4", "Frobnicate": "yes", "WriteSparseFiles": None},
    }
    return {"kind": "DataUpload", "spec": {**base, **spec}}


def dd(**spec: Any) -> dict[str, Any]:
    base = {
        "datamover": "snapmover",
        "backupStorageLocation": "default",
        "snapshotID": SNAPSHOT,
        "sourceNamespace": "app",
        "targetVolume": {"namespace": "app", "pvc": "restored", "pv": ""},
        "nodeOS": "linux",
        "snapshotSize": 1024,
    }
    return {"kind": "DataDownload", "spec": {**base, **spec}}


def test_valid_crs_pass() -> None:
    assert spec_problem(du()) == ""
    assert spec_problem(du(operationTimeout=None, dataMoverConfig=None)) == ""
    bare = du()
    del bare["spec"]["snapshotType"]
    assert spec_problem(bare) == ""
    assert spec_problem(du(csiSnapshot={"volumeSnapshot": "s", "storageClass": ""})) == ""
    for parent in (None, "", "auto", "none", SNAPSHOT):
        assert spec_problem(du(parentSnapshot=parent)) == "", parent
    assert spec_problem(dd()) == ""
    assert spec_problem(dd(nodeOS="auto", snapshotSize=None, dataMoverConfig={"WriteSparseFiles": "TRUE"})) == ""


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ({"sourceNamespace": "../../kube-system"}, ("spec.sourceNamespace", "'../../kube-system'", "namespace name")),
        ({"sourceNamespace": "App"}, ("spec.sourceNamespace", "'App'")),
        ({"sourceNamespace": "a.b"}, ("spec.sourceNamespace", "'a.b'")),  # a subdomain, not a label
        ({"sourceNamespace": "n" * 64}, ("spec.sourceNamespace", "longer than 63")),
        ({"sourceNamespace": ""}, ("spec.sourceNamespace is empty",)),
        ({"sourceNamespace": 7}, ("spec.sourceNamespace must be a string",)),
        ({"sourcePVC": "../../../etc"}, ("spec.sourcePVC", "'../../../etc'", "object name")),
        ({"sourcePVC": "x" * 300}, ("spec.sourcePVC", "x" * 60, "(300 characters)")),
        ({"sourcePVC": "data\n"}, ("spec.sourcePVC", "'data\\n'")),
        ({"csiSnapshot": {"volumeSnapshot": "snäp-☃"}}, ("spec.csiSnapshot.volumeSnapshot", "snäp-☃")),
        ({"csiSnapshot": {"volumeSnapshot": ""}}, ("spec.csiSnapshot.volumeSnapshot is empty",)),
        ({"csiSnapshot": None}, ("spec.csiSnapshot",)),
        ({"csiSnapshot": {"volumeSnapshot": "s", "storageClass": "Fast SSD"}}, ("csiSnapshot.storageClass", "Fast")),
        ({"csiSnapshot": {"volumeSnapshot": "s", "snapshotClass": "-x"}}, ("csiSnapshot.snapshotClass", "'-x'")),
        ({"snapshotType": "AWS"}, ("spec.snapshotType", "'AWS'", "only CSI")),
        ({"snapshotType": ""}, ("spec.snapshotType",)),
        ({"snapshotType": None}, ("spec.snapshotType",)),  # the test API server turns "" into null
        ({"backupStorageLocation": ""}, ("spec.backupStorageLocation is empty",)),
        ({"backupStorageLocation": "../../etc/passwd"}, ("spec.backupStorageLocation", "'../../etc/passwd'")),
        ({"backupStorageLocation": "stöñage-☃"}, ("spec.backupStorageLocation", "stöñage-☃")),
        ({"operationTimeout": "soon"}, ("spec.operationTimeout", "'soon'")),
        ({"operationTimeout": "-5m"}, ("spec.operationTimeout", "'-5m'")),
        ({"operationTimeout": "0s"}, ("spec.operationTimeout", "longer than 0s")),
        ({"operationTimeout": "99999999999999h"}, ("spec.operationTimeout", "at most 2562047h")),
        ({"operationTimeout": "9" * 40}, ("spec.operationTimeout", "at most 2562047h")),
        ({"dataMoverConfig": ["x"]}, ("spec.dataMoverConfig must be a map",)),
        ({"dataMoverConfig": {"ParallelFilesUpload": "abc"}}, ("dataMoverConfig.ParallelFilesUpload", "'abc'")),
        ({"dataMoverConfig": {"ParallelFilesUpload": "0"}}, ("dataMoverConfig.ParallelFilesUpload", "'0'")),
        ({"dataMoverConfig": {"ParallelFilesUpload": "1.5"}}, ("dataMoverConfig.ParallelFilesUpload", "from 1 to")),
        ({"dataMoverConfig": {"ParallelFilesUpload": "1e400"}}, ("dataMoverConfig.ParallelFilesUpload", "1e400")),
        ({"dataMoverConfig": {"WriteSparseFiles": "maybe"}}, ("dataMoverConfig.WriteSparseFiles", "'maybe'")),
        ({"parentSnapshot": "latest"}, ("spec.parentSnapshot", "'latest'", "auto, none or", "64 hex digits")),
        ({"parentSnapshot": "Auto"}, ("spec.parentSnapshot", "'Auto'")),
        ({"parentSnapshot": SNAPSHOT[:12]}, ("spec.parentSnapshot", SNAPSHOT[:12])),  # a prefix: ambiguous later
        ({"parentSnapshot": SNAPSHOT.upper()}, ("spec.parentSnapshot",)),
        ({"parentSnapshot": "../" + SNAPSHOT}, ("spec.parentSnapshot",)),
        ({"parentSnapshot": 5}, ("spec.parentSnapshot", "'5'")),
    ],
)
def test_an_invalid_upload_names_the_field_and_the_value(spec: dict[str, Any], needles: tuple[str, ...]) -> None:
    names_the_problem(du(**spec), needles)


def names_the_problem(cr: dict[str, Any], needles: tuple[str, ...]) -> None:
    problem = spec_problem(cr)
    assert problem, cr
    for needle in needles:
        assert needle in problem, (needle, problem)


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ({"snapshotID": ""}, ("spec.snapshotID is empty",)),
        ({"snapshotID": "../../etc/passwd"}, ("spec.snapshotID", "'../../etc/passwd'", "64 hex digits")),
        ({"snapshotID": SNAPSHOT.upper()}, ("spec.snapshotID",)),
        ({"snapshotID": SNAPSHOT[:-1]}, ("spec.snapshotID",)),
        ({"snapshotID": 12}, ("spec.snapshotID",)),
        ({"targetVolume": {"pvc": "x"}}, ("spec.targetVolume",)),
        ({"targetVolume": "x"}, ("spec.targetVolume",)),
        ({"targetVolume": {"pvc": "x", "namespace": "../kube-system"}}, ("spec.targetVolume.namespace", "../kube")),
        ({"targetVolume": {"pvc": "X_Y", "namespace": "app"}}, ("spec.targetVolume.pvc", "'X_Y'")),
        ({"targetVolume": {"pvc": "x", "namespace": "app", "pv": "/etc"}}, ("spec.targetVolume.pv", "'/etc'")),
        ({"sourceNamespace": None}, ("spec.sourceNamespace is empty",)),
        ({"sourceNamespace": "../.."}, ("spec.sourceNamespace", "'../..'")),
        ({"nodeOS": "windows"}, ("spec.nodeOS", "'windows'")),
        ({"snapshotSize": -1}, ("spec.snapshotSize", "-1")),
        ({"snapshotSize": "big"}, ("spec.snapshotSize", "'big'")),
        ({"operationTimeout": "1 fortnight"}, ("spec.operationTimeout", "1 fortnight")),
        ({"dataMoverConfig": {"ParallelFilesDownload": "lots"}}, ("dataMoverConfig.ParallelFilesDownload", "lots")),
    ],
)
def test_an_invalid_download_names_the_field_and_the_value(spec: dict[str, Any], needles: tuple[str, ...]) -> None:
    names_the_problem(dd(**spec), needles)


def test_the_role_decides_which_parallelism_key_counts() -> None:
    assert spec_problem(du(dataMoverConfig={"ParallelFilesDownload": "lots"})) == ""
    assert spec_problem(dd(dataMoverConfig={"ParallelFilesUpload": "lots"})) == ""


@pytest.mark.parametrize("name", ["a", "kube-system", "a1-b2", "9" * 63])
def test_dns_labels(name: str) -> None:
    assert label_problem(name) == ""


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "ä", "a" * 64])
def test_not_dns_labels(name: str) -> None:
    assert label_problem(name)


@pytest.mark.parametrize("name", ["a", "a.b-c.d", "l" * 253, "snap-1.2"])
def test_dns_subdomains(name: str) -> None:
    assert subdomain_problem(name) == ""


@pytest.mark.parametrize("name", ["", ".a", "a.", "a..b", "a/b", "..", "a" * 254, "a.-b"])
def test_not_dns_subdomains(name: str) -> None:
    assert subdomain_problem(name)
