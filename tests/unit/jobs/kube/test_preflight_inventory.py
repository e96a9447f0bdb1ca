"""The doctor's copy of the launcher's permissions is exactly tests/rbac_inventory.py's list."""

from __future__ import annotations

from jobs.kube.preflight import LAUNCHER_PERMISSIONS, Permission
from tests.rbac_inventory import launcher_permissions


def test_doctor_checks_every_permission_the_launcher_uses() -> None:
    expected = set()
    for p in launcher_permissions():
        for name in p.names or ("",):
            expected.add(Permission(p.group, p.resource, p.verb, p.scope, name))
    assert set(LAUNCHER_PERMISSIONS) == expected
