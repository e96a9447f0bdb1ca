"""The install manifests (manifests/), rendered with `kubectl kustomize` (local, no cluster):
RBAC is exactly the launcher's API use (tests/rbac_inventory.py), the ConfigMap documents every
launcher key and validates, the Deployment is hardened, `kustomize edit set image` changes the
launcher's and the movers' image together, no install but the without-velero overlay carries a
CRD, and the Velero overlay stays out of Velero's way."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.config import KNOWN_KEYS, load_config
from tests.rbac_inventory import LAUNCHER_API_CALLS, LAUNCHER_MODULES, VERB_OF_PREFIX, Permission, launcher_permissions

ROOT = Path(__file__).parents[2]
MANIFESTS = ROOT / "manifests"
VELERO_OVERLAY = MANIFESTS / "overlays" / "velero"
WITHOUT_VELERO_OVERLAY = MANIFESTS / "overlays" / "without-velero"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomizations")


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def granted(docs: list[dict[str, Any]]) -> set[Permission]:
    perms = set()
    for kind, scope in (("Role", "namespace"), ("ClusterRole", "cluster")):
        for rule in one(docs, kind, "snapmover-launcher")["rules"]:
            names = tuple(rule.get("resourceNames", ()))
            perms |= {
                Permission(g, r, v, scope, names)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
    return perms


def test_launcher_calls_exactly_the_api_methods_in_the_inventory() -> None:
    code = "\n".join((ROOT / m).read_text() for m in LAUNCHER_MODULES)
    own = set(re.findall(r"def (\w+)\(", code))  # the launcher's own helpers (get_cr, read_job, ...)
    prefixes = "|".join(VERB_OF_PREFIX)
    called = {m for m in re.findall(rf"\.((?:{prefixes})_\w+)\b", code) if m not in own}  # called or passed
    assert called == set(LAUNCHER_API_CALLS), (
        f"new calls (add them to tests/rbac_inventory.py and rbac.yaml): {sorted(called - set(LAUNCHER_API_CALLS))}; "
        f"no longer called: {sorted(set(LAUNCHER_API_CALLS) - called)}"
    )
    assert "watch.Watch()" in code and ".stream(" in code  # the inventory's watch permissions (informer.py)


@pytest.mark.parametrize("path", [MANIFESTS, VELERO_OVERLAY], ids=["base", "velero"])
def test_rbac_grants_exactly_what_the_launcher_uses(path: Path) -> None:
    have, need = granted(render(path)), launcher_permissions()
    assert have - need == set(), "granted but never used"
    assert need - have == set(), "used but not granted"


@pytest.mark.parametrize("path", [MANIFESTS, VELERO_OVERLAY], ids=["base", "velero"])
def test_bindings_name_the_deployments_service_account(path: Path) -> None:
    docs = render(path)
    pod = one(docs, "Deployment", "snapmover-launcher")["spec"]["template"]["spec"]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        binding = one(docs, kind, "snapmover-launcher")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
        ]
        assert binding["roleRef"]["name"] == "snapmover-launcher"


def test_configmap_holds_every_launcher_key_documented_and_valid() -> None:
    data = one(render(MANIFESTS), "ConfigMap", "snapmover-config")["data"]
    assert set(data) == KNOWN_KEYS
    cfg = load_config(data, "snapmover")  # raises ConfigurationError on a bad value
    assert cfg.image == "snapmover:0.1.0"
    # Documented inline: every key sits in a run of at most two keys right after a comment.
    run = None
    for line in (MANIFESTS / "base" / "configmap.yaml").read_text().split("\ndata:\n", 1)[1].splitlines():
        if line.lstrip().startswith("#"):
            run = 0
        elif re.match(r"  \w+:", line):
            assert run is not None and run < 2, f"undocumented ConfigMap key: {line.strip()}"
            run += 1


def test_deployment_is_hardened_probed_and_resourced() -> None:
    docs = render(MANIFESTS)
    pod = one(docs, "Deployment", "snapmover-launcher")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    command = container["command"]
    assert command[:2] == ["snapmover", "launcher"]
    assert command[command.index("--config-map") + 1] == "snapmover-config"
    port = int(command[command.index("--metrics-port") + 1])
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    service = one(docs, "Service", "snapmover-metrics")
    labels = one(docs, "Deployment", "snapmover-launcher")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


@pytest.mark.parametrize("path", [MANIFESTS, VELERO_OVERLAY], ids=["base", "velero"])
def test_set_image_changes_the_launcher_and_the_mover_image(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    where = copy / path.relative_to(MANIFESTS)
    # What `kustomize edit set image snapmover=registry.example.com/team/snapmover:1.2.3` writes:
    with (where / "kustomization.yaml").open("a") as f:
        f.write("images:\n- name: snapmover\n  newName: registry.example.com/team/snapmover\n  newTag: 1.2.3\n")
    docs = render(where)
    image = "registry.example.com/team/snapmover:1.2.3"
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert one(docs, "ConfigMap", "snapmover-config")["data"]["image"] == image


def test_default_installs_into_snapmover_and_never_a_crd() -> None:
    """Where Velero is installed its CRDs are what counts: the default install must not carry ours."""
    docs = render(MANIFESTS)
    assert one(docs, "Namespace")["metadata"]["name"] == "snapmover"
    assert "CustomResourceDefinition" not in {d["kind"] for d in docs}
    cluster_kinds = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] not in cluster_kinds} == {"snapmover"}
    monitoring = render(MANIFESTS / "overlays" / "monitoring")
    assert "CustomResourceDefinition" not in {d["kind"] for d in monitoring}


def test_without_velero_overlay_is_the_default_plus_exactly_the_crds() -> None:
    default = render(MANIFESTS)
    docs = render(WITHOUT_VELERO_OVERLAY)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in crds} == {
        "datauploads.velero.io",
        "datadownloads.velero.io",
        "backupstoragelocations.velero.io",
    }
    for crd in crds:  # manifests/crd as is
        assert crd == yaml.safe_load(
            (MANIFESTS / "crd" / f"velero.io_{crd['spec']['names']['plural']}.yaml").read_text()
        )
    assert [d for d in docs if d["kind"] != "CustomResourceDefinition"] == default


def test_velero_overlay_lives_in_velero_without_owning_its_namespace_or_crds() -> None:
    docs = render(VELERO_OVERLAY)
    kinds = {d["kind"] for d in docs}
    assert "Namespace" not in kinds  # Velero's namespace: never created, labelled or deleted by us
    assert "CustomResourceDefinition" not in kinds  # Velero installed its own
    namespaced = [d for d in docs if d["kind"] not in {"ClusterRole", "ClusterRoleBinding"}]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"velero"}


def test_examples_are_addressed_to_snapmover() -> None:
    docs = [d for f in sorted((MANIFESTS / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"DataUpload", "DataDownload", "BackupStorageLocation", "Secret", "CronJob"} <= kinds
    for d in docs:
        if d["kind"] in ("DataUpload", "DataDownload"):
            assert d["spec"]["datamover"] == "snapmover"
            assert d["metadata"]["namespace"] == "snapmover"
            assert d["spec"]["backupStorageLocation"] == "default"


def _nullable_paths(schema: Any, path: str = "") -> set[str]:
    """Property paths of an OpenAPI schema that are marked nullable."""
    found: set[str] = set()
    if not isinstance(schema, dict):
        return found
    if schema.get("nullable"):
        found.add(path)
    for key, sub in (schema.get("properties") or {}).items():
        found |= _nullable_paths(sub, f"{path}.{key}")
    found |= _nullable_paths(schema.get("items"), f"{path}[]")
    found |= _nullable_paths(schema.get("additionalProperties"), f"{path}{{}}")
    return found


@pytest.mark.parametrize(
    "name",
    ["velero.io_datauploads.yaml", "velero.io_datadownloads.yaml", "velero.io_backupstoragelocations.yaml"],
)
def test_crds_are_no_more_nullable_than_velero_ships_them(name: str) -> None:
    # Our CRDs once marked every string nullable to get "" past a broken test API server; they
    # must accept exactly what Velero's accept, so nothing is nullable that Velero's is not.
    ours = yaml.safe_load((MANIFESTS / "crd" / name).read_text())
    theirs = yaml.safe_load((ROOT / "tests" / "fixtures" / "velero-crds" / name).read_text())
    extra = _nullable_paths(ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) - _nullable_paths(
        theirs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    )
    assert not extra, f"nullable in manifests/crd/{name} but not in Velero's: {sorted(extra)}"
