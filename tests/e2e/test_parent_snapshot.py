"""e2e: a DataUpload's spec.parentSnapshot is honoured (issue #16 item 7).

After a first backup of a PVC, ``parentSnapshot: none`` gives a full backup that says so in
``status.dataMoverResult`` (mode and reason), a snapshot id is used as the parent, an id that is
not in the repository fails the CR with a message naming the field and the id (the mover's check:
it has the repository), and a value that is no id at all fails at once (the launcher's check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.contract import RESULT_BACKUP_MODE, RESULT_FULL_REASON, RESULT_PARENT
from tests.e2e.launcher_env import LauncherEnv, launcher_env, pvc
from tests.fixtures.cluster import ClusterHandle

pytestmark = pytest.mark.e2e

FINAL = {"Completed", "Failed", "Canceled"}


def backed_up(env: LauncherEnv, snapshot: str, **spec: Any) -> tuple[str, dict[str, Any]]:
    """A DataUpload of a new VolumeSnapshot of PVC data; (its name, its final status)."""
    env.snapshot(snapshot, "data")
    du = env.data_upload(snapshot, "data", operationTimeout="5m", **spec)
    return du, env.wait_phase("dataupload", du, FINAL, timeout=300)["status"]


def test_parent_snapshot_none_an_id_and_a_missing_id(velero_crds: ClusterHandle, tmp_path: Path) -> None:
    with launcher_env(velero_crds, tmp_path, {"prepareTimeout": "4m"}) as env:
        env.start_launcher()
        env.apply(pvc("data", size="256Mi"), env.app)
        env.run_pod_job("fill", "head -c 3000000 /dev/urandom > /data/a", "data")

        _, first = backed_up(env, "snap-1")
        assert first["phase"] == "Completed", first
        result = first["dataMoverResult"]
        assert result[RESULT_BACKUP_MODE] == "full" and RESULT_PARENT not in result, result
        assert "no parent found" in result[RESULT_FULL_REASON], result

        _, full = backed_up(env, "snap-2", parentSnapshot="none")
        assert full["phase"] == "Completed", full
        result = full["dataMoverResult"]
        assert result[RESULT_BACKUP_MODE] == "full" and RESULT_PARENT not in result, result
        assert "parent none" in result[RESULT_FULL_REASON], result

        _, given = backed_up(env, "snap-3", parentSnapshot=first["snapshotID"])
        assert given["phase"] == "Completed", given
        result = given["dataMoverResult"]
        assert result[RESULT_BACKUP_MODE] == "incremental", result
        assert result[RESULT_PARENT] == first["snapshotID"] and RESULT_FULL_REASON not in result, result

        missing = "e" * 64
        _, bogus = backed_up(env, "snap-4", parentSnapshot=missing)
        assert bogus["phase"] == "Failed", bogus
        assert f"spec.parentSnapshot '{missing}': no such snapshot in the repository" in bogus["message"], bogus

        _, malformed = backed_up(env, "snap-5", parentSnapshot="yesterday")
        assert malformed["phase"] == "Failed", malformed
        assert "spec.parentSnapshot 'yesterday' is not auto, none or" in malformed["message"], malformed
