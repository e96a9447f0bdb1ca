"""Exposure: the volumes a mover Job mounts, and handing a restored volume to its target PVC.

For a backup, the source VolumeSnapshot is taken over (cloned VolumeSnapshot + content in the
launcher namespace, original released with its data retained, as Velero does) and a PVC is
provisioned from the clone; for a restore, a restore PVC copies the target PVC's class, modes and
size. After a restore, :meth:`Exposer.rebind_view` gathers what ``launcher.phases.rebind`` decides
on. Also here: resolving a CR's storage location and checking the Secrets it needs.

Every step is idempotent (create-if-absent) and reports as a value (``phases.Exposed`` /
``Waiting`` / ``Failed``); the bodies come from ``launcher.objects``; API errors are mapped by
``launcher.api``. Used by ``launcher.controller`` (and the forget/maintenance Jobs' location).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client

from jobs.contract import DATAUPLOAD_KIND, LABEL_OWNER_UID, VOLUME_MODE_FILESYSTEM
from launcher import api, objects
from launcher.config import ConfigurationError, LauncherConfig, StorageLocation, decode_ca_cert
from launcher.failures import clip, newest_event
from launcher.informer import Informer, Recent
from launcher.jobspec import PASSWORD_KEY, PASSWORD_SECRET, object_name
from launcher.objects import RESTORED_FOR_LABEL, SELECTED_NODE, SNAP_GROUP, SNAP_VERSION
from launcher.phases import (
    ClaimBinding,
    Exposed,
    Exposure,
    Failed,
    RebindView,
    Waiting,
    operation_timeout,
    snapshot_wait,
    waited_too_long,
)

log = logging.getLogger("snapmover.launcher")

CLAIM_EVENTS_AFTER_SECONDS = 10.0  # most PVCs bind sooner: only a slow one costs an Event list


class LocationError(Exception):
    """A storage location or one of its Secrets is missing or unusable (the message says which)."""


def location_from_bsl(bsl: dict[str, Any]) -> StorageLocation:
    """A StorageLocation from a Velero BackupStorageLocation."""
    spec = bsl.get("spec") or {}
    config = spec.get("config") or {}
    provider = str(spec.get("provider", "aws"))
    if provider.rsplit("/", maxsplit=1)[-1] not in ("aws",):
        raise LocationError(
            f"BackupStorageLocation {bsl['metadata']['name']}: provider {provider!r} is not supported "
            "(snapmover speaks S3: use provider aws)"
        )
    credential = spec.get("credential") or {}
    return StorageLocation(
        name=bsl["metadata"]["name"],
        provider="aws",
        bucket=(spec.get("objectStorage") or {}).get("bucket", ""),
        prefix=(spec.get("objectStorage") or {}).get("prefix", ""),
        region=config.get("region", ""),
        s3_url=config.get("s3Url", ""),
        path_style=str(config.get("s3ForcePathStyle", "")).lower() == "true",
        insecure=str(config.get("insecureSkipTLSVerify", "")).lower() == "true",
        credential_secret=credential.get("name", "cloud-credentials"),
        credential_key=credential.get("key", "cloud"),
        profile=config.get("profile", ""),
        ca_cert=bsl_ca_cert(bsl),
    )


def bsl_ca_cert(bsl: dict[str, Any]) -> str:
    """The PEM of a BackupStorageLocation's ``objectStorage.caCert``; a malformed one is a LocationError."""
    try:
        return decode_ca_cert(
            ((bsl.get("spec") or {}).get("objectStorage") or {}).get("caCert"), "objectStorage.caCert"
        )
    except ConfigurationError as e:
        raise LocationError(f"BackupStorageLocation {bsl['metadata']['name']}: {e}") from e


def usable_size(restore_size: Any) -> str | None:
    """A snapshot's restoreSize when it can size a PVC (some snapshotters report 0 for an empty volume)."""
    text = str(restore_size or "").strip()
    return None if text in ("", "0") else text


@dataclass
class Exposer:
    """Exposure and storage-location reads for the controller (one per launcher)."""

    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    storage_api: client.StorageV1Api
    claims: Informer
    snapshots: Informer
    recent: Recent
    config: LauncherConfig

    @property
    def ns(self) -> str:
        return self.config.namespace

    # --- storage location and Secrets -------------------------------------------------------

    def storage_location(self, cr: dict[str, Any]) -> StorageLocation:
        """The CR's storage location, its credentials checked (LocationError naming what is missing)."""
        name = str((cr.get("spec") or {}).get("backupStorageLocation") or "")
        if name in self.config.storage_locations:
            loc = self.config.storage_locations[name]
        else:
            bsl = self.recent.get(
                ("bsl", name),
                lambda: api.read_or_none(
                    f"BackupStorageLocation {name}",
                    self.custom.get_namespaced_custom_object,
                    "velero.io",
                    "v1",
                    self.ns,
                    "backupstoragelocations",
                    name,
                ),
            )
            if bsl is None:
                raise LocationError(
                    f"storage location {name!r} not found: no BackupStorageLocation {self.ns}/{name} "
                    "and no storageLocations entry in the launcher ConfigMap"
                )
            loc = location_from_bsl(bsl)
        if loc.provider == "aws" and loc.credential_secret:
            secret = self.read_secret(loc.credential_secret)
            if secret is None:
                raise LocationError(
                    f"credentials Secret {self.ns}/{loc.credential_secret} of storage location {name} does not exist"
                )
            if loc.credential_key not in (secret.data or {}):
                raise LocationError(
                    f"credentials Secret {self.ns}/{loc.credential_secret} has no key {loc.credential_key!r}"
                )
        if loc.provider == "filesystem":
            claim = self.recent.get(("pvc", loc.pvc), lambda: self.read_claim(self.ns, loc.pvc))
            if claim is None:
                raise LocationError(f"repository PVC of storage location {name} {self.ns}/{loc.pvc} does not exist")
        return loc

    def read_secret(self, name: str) -> Any | None:
        return self.recent.get(
            ("secret", name),
            lambda: api.read_or_none(f"Secret {self.ns}/{name}", self.core.read_namespaced_secret, name, self.ns),
        )

    def password_problem(self) -> str:
        """Why the repository password Secret is unusable ('' when it is fine; never re-created)."""
        secret = self.read_secret(PASSWORD_SECRET)
        if secret is None:
            return (
                f"the repository password Secret {self.ns}/{PASSWORD_SECRET} is missing: restore it from your "
                "backup of it (a new password cannot open the existing repositories)"
            )
        if PASSWORD_KEY not in (secret.data or {}):
            return f"Secret {self.ns}/{PASSWORD_SECRET} has no key {PASSWORD_KEY!r}"
        return ""

    def read_claim(self, namespace: str, name: str) -> Any | None:
        return api.read_or_none(
            f"PVC {namespace}/{name}", self.core.read_namespaced_persistent_volume_claim, name, namespace
        )

    # --- exposure ------------------------------------------------------------------------------

    def expose(self, cr: dict[str, Any], now: float) -> tuple[Exposure, StorageLocation | None]:
        """One idempotent exposure step for an Accepted CR, and its storage location."""
        try:
            location = self.storage_location(cr)
        except LocationError as e:
            return Failed(str(e)), None
        problem = self.password_problem()
        if problem:
            return Failed(problem), location
        try:
            outcome = self.expose_backup(cr, now) if cr["kind"] == DATAUPLOAD_KIND else self.expose_restore(cr, now)
        except ConfigurationError as e:
            return Failed(str(e)), location
        if isinstance(outcome, Exposed):
            claim = self.claims.get(outcome.claim, self.ns)
            uid = claim.metadata.uid if claim is not None else None
            binding = self.claim_binding(claim) if claim is not None and cr["kind"] == DATAUPLOAD_KIND else None
            outcome = replace(outcome, claim_uid=uid, binding=binding)
        return outcome, location

    def claim_binding(self, claim: Any) -> ClaimBinding:
        """How far the backup PVC is from Bound: its class, the class's binding mode and provisioner,
        and the newest Event about it (read only while it is not Bound)."""
        phase = (claim.status.phase if claim.status else None) or "Pending"
        sc_name = claim.spec.storage_class_name or ""
        if phase == "Bound":
            return ClaimBinding(phase, sc_name)
        sc = None
        if sc_name:
            sc = self.recent.get(
                ("storageclass", sc_name),
                lambda: api.read_or_none(f"StorageClass {sc_name}", self.storage_api.read_storage_class, sc_name),
            )
        created = claim.metadata.creation_timestamp
        young = created is not None and time.time() - created.timestamp() < CLAIM_EVENTS_AFTER_SECONDS
        events = [] if young else self.events_about("PersistentVolumeClaim", claim.metadata.name)
        event = newest_event(events, None, types=("Warning", "Normal"))
        return ClaimBinding(
            phase,
            sc_name,
            binding_mode=(sc.volume_binding_mode or "Immediate") if sc is not None else "",
            provisioner=sc.provisioner if sc is not None else "",
            last_event=f"{event.get('reason')}: {clip(event.get('message'))}" if event is not None else "",
        )

    def events_about(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The Events about one object of the launcher namespace, as dicts (memoized briefly).

        [] when they cannot be read: they only sharpen a message, so their absence never fails a CR.
        """

        def fetch() -> list[dict[str, Any]]:
            selector = f"involvedObject.kind={kind},involvedObject.name={name}"
            found = api.call("Events", self.core.list_namespaced_event, self.ns, field_selector=selector)
            return [self.core.api_client.sanitize_for_serialization(e) for e in found.items]

        try:
            events: list[dict[str, Any]] = self.recent.get(("events", kind, name), fetch)
        except (api.ApiRejectedError, api.ApiUnavailableError) as e:
            log.info("cannot read the Events about %s %s/%s: %s", kind, self.ns, name, e)
            return []
        return events

    def expose_backup(self, cr: dict[str, Any], now: float) -> Exposure:
        spec = cr["spec"]
        src_ns, src_pvc = spec["sourceNamespace"], spec["sourcePVC"]
        name = object_name(cr)
        exposed = self.claims.get(name, self.ns)
        if exposed is not None and (exposed.metadata.labels or {}).get(LABEL_OWNER_UID) == cr["metadata"]["uid"]:
            mode = exposed.spec.volume_mode or VOLUME_MODE_FILESYSTEM
            return Exposed(name, mode, src_ns, src_pvc, placement=objects.claim_placement(exposed.metadata.annotations))
        source = self.recent.get(("source", cr["metadata"]["uid"]), lambda: self.read_claim(src_ns, src_pvc))
        affinity = None
        if source is None:
            mode, size = VOLUME_MODE_FILESYSTEM, None
            if waited_too_long(cr, now):
                return Failed(f"source PVC {src_ns}/{src_pvc} does not exist")
        else:
            mode = source.spec.volume_mode or VOLUME_MODE_FILESYSTEM
            size = (source.spec.resources.requests or {}).get("storage")
            affinity = self.source_affinity(cr, source)
        clone = self.snapshots.get(name, self.ns)
        if clone is None:
            vs_name = (spec.get("csiSnapshot") or {}).get("volumeSnapshot", "")
            original = self.read_snapshot(src_ns, vs_name)
            held = snapshot_wait(cr, original, now)
            if held is not None:
                return held
            assert original is not None
            return self.take_snapshot_ownership(cr, original, name)
        if not (clone.get("status") or {}).get("readyToUse"):
            return Waiting(f"cloned VolumeSnapshot {self.ns}/{name} to become ReadyToUse")
        csi = spec.get("csiSnapshot") or {}
        overrides = self.config.backup_pvc_overrides.get(str(csi.get("storageClass")), {})
        body = objects.backup_claim(
            cr,
            name,
            self.ns,
            mode=mode,
            size=usable_size((clone.get("status") or {}).get("restoreSize")) or size,
            storage_class=overrides.get("storageClass") or csi.get("storageClass"),
            read_only=bool(overrides.get("readOnly")),
            source_affinity=affinity,
        )
        self.create_claim(body)
        return Exposed(
            name, mode, src_ns, src_pvc, placement=objects.claim_placement(body["metadata"].get("annotations"))
        )

    def source_affinity(self, cr: dict[str, Any], source: Any) -> dict[str, Any] | None:
        """The required node affinity of the source PVC's PV (a ``local`` PV's node), as a dict."""
        pv_name = source.spec.volume_name
        if not pv_name:
            return None
        pv = self.recent.get(("source-pv", cr["metadata"]["uid"]), lambda: self.read_volume(pv_name))
        required = pv.spec.node_affinity.required if pv is not None and pv.spec.node_affinity else None
        if required is None:
            return None
        affinity: dict[str, Any] = self.core.api_client.sanitize_for_serialization(required)
        return affinity

    def create_claim(self, body: dict[str, Any]) -> None:
        what = f"PVC {self.ns}/{body['metadata']['name']}"
        created = api.create_if_absent(what, self.core.create_namespaced_persistent_volume_claim, self.ns, body)
        if created is not None:
            self.claims.put(created)

    def read_snapshot(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not name:
            return None
        vs: dict[str, Any] | None = api.read_or_none(
            f"VolumeSnapshot {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            namespace,
            "volumesnapshots",
            name,
        )
        return vs

    def take_snapshot_ownership(self, cr: dict[str, Any], original: dict[str, Any], name: str) -> Exposure:
        """Clone VS+VSC into the launcher namespace, then release the originals (data retained)."""
        vsc_name = original["status"]["boundVolumeSnapshotContentName"]
        what = f"VolumeSnapshotContent {vsc_name}"
        vsc = api.call(
            what, self.custom.get_cluster_custom_object, SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_name
        )
        handle = (vsc.get("status") or {}).get("snapshotHandle")
        if not handle:
            return Waiting(f"VolumeSnapshotContent {vsc_name} to report its snapshotHandle")
        content = objects.snapshot_content_clone(cr, name, self.ns, content=vsc, handle=handle)
        api.create_if_absent(
            f"VolumeSnapshotContent {content['metadata']['name']}",
            self.custom.create_cluster_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            "volumesnapshotcontents",
            content,
        )
        clone = api.create_if_absent(
            f"VolumeSnapshot {self.ns}/{name}",
            self.custom.create_namespaced_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            self.ns,
            "volumesnapshots",
            objects.snapshot_clone(cr, name, self.ns, content=vsc),
        )
        if clone is not None:
            self.snapshots.put(clone)
        self.release_original(original, vsc_name)
        return Waiting("the cloned VolumeSnapshot to become ready")

    def release_original(self, original: dict[str, Any], vsc_name: str) -> None:
        """Retain the original content's data, then delete the original VolumeSnapshot and content."""
        what = f"VolumeSnapshotContent {vsc_name}"
        api.call(
            what,
            self.custom.patch_cluster_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            "volumesnapshotcontents",
            vsc_name,
            objects.retain_content_patch(),
        )
        meta = original["metadata"]
        api.delete_if_present(
            f"VolumeSnapshot {meta['namespace']}/{meta['name']}",
            self.custom.delete_namespaced_custom_object,
            SNAP_GROUP,
            SNAP_VERSION,
            meta["namespace"],
            "volumesnapshots",
            meta["name"],
        )
        api.delete_if_present(
            what, self.custom.delete_cluster_custom_object, SNAP_GROUP, SNAP_VERSION, "volumesnapshotcontents", vsc_name
        )
        log.info("took over VolumeSnapshot %s/%s (content %s)", meta["namespace"], meta["name"], vsc_name)

    def expose_restore(self, cr: dict[str, Any], now: float) -> Exposure:
        target = cr["spec"].get("targetVolume") or {}
        tns, tname = target.get("namespace", ""), target.get("pvc", "")
        pvc = self.read_claim(tns, tname)
        if pvc is None:
            if waited_too_long(cr, now):
                return Failed(f"target PVC {tns}/{tname} does not exist (waited {operation_timeout(cr):.0f}s)")
            return Waiting(f"target PVC {tns}/{tname} to exist")
        if pvc.status.phase == "Bound":
            return Failed(f"target PVC {tns}/{tname} is already bound to a volume; restore needs a new, pending PVC")
        sc_name = pvc.spec.storage_class_name
        if sc_name and not self.config.restore_ignore_delay_binding and self.waits_for_consumer(sc_name, pvc):
            return Waiting(f"target PVC {tns}/{tname} to get a selected node (WaitForFirstConsumer)")
        name = object_name(cr)
        mode = pvc.spec.volume_mode or VOLUME_MODE_FILESYSTEM
        body = objects.restore_claim(
            cr,
            name,
            self.ns,
            mode=mode,
            access_modes=pvc.spec.access_modes,
            size=(pvc.spec.resources.requests or {}).get("storage"),
            storage_class=sc_name,
            selected_node=(pvc.metadata.annotations or {}).get(SELECTED_NODE),
        )
        self.create_claim(body)
        placement = objects.claim_placement(body["metadata"].get("annotations"))
        return Exposed(name, mode, str(cr["spec"].get("sourceNamespace", "")), "", placement=placement)

    def waits_for_consumer(self, sc_name: str, pvc: Any) -> bool:
        """Whether the target's StorageClass binds on first consumer and no node is selected yet."""
        sc = api.read_or_none(f"StorageClass {sc_name}", self.storage_api.read_storage_class, sc_name)
        if sc is None or sc.volume_binding_mode != "WaitForFirstConsumer":
            return False
        return not (pvc.metadata.annotations or {}).get(SELECTED_NODE)

    # --- restore rebinding -----------------------------------------------------------------------

    def rebind_view(self, cr: dict[str, Any], to_dict: Any) -> RebindView:
        """The target PVC and the PV in play (the target's own once Bound, else the restored one)."""
        target_ref = cr["spec"]["targetVolume"]
        target = self.read_claim(target_ref["namespace"], target_ref["pvc"])
        if target is None:
            return RebindView(None, None)
        if target.status.phase == "Bound":
            return RebindView(to_dict(target), to_dict(self.read_volume(target.spec.volume_name)))
        restore = self.read_claim(self.ns, object_name(cr))
        pv_name = restore.spec.volume_name if restore is not None else None
        if pv_name is None:
            pvs = api.call(
                "PersistentVolumes",
                self.core.list_persistent_volume,
                label_selector=f"{RESTORED_FOR_LABEL}={cr['metadata']['uid']}",
            )
            pv_name = pvs.items[0].metadata.name if pvs.items else None
        pv = self.read_volume(pv_name) if pv_name else None
        return RebindView(to_dict(target), to_dict(pv) if pv is not None else None, restore is not None)

    def read_volume(self, name: str) -> Any:
        return api.read_or_none(f"PersistentVolume {name}", self.core.read_persistent_volume, name)

    def patch_volume(self, name: str, patch: dict[str, Any]) -> None:
        api.call(f"PersistentVolume {name}", self.core.patch_persistent_volume, name, patch)

    def delete_restore_claim(self, cr: dict[str, Any]) -> None:
        name = object_name(cr)
        api.delete_if_present(
            f"PVC {self.ns}/{name}", self.core.delete_namespaced_persistent_volume_claim, name, self.ns
        )
