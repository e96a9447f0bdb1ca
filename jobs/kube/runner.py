"""The mover inside a Job: ``snapmover job upload|download`` (DESIGN §3, §4).

Reads only the Job environment of :mod:`jobs.contract` and the mounted secret files, then:

1. moves its CR to ``InProgress`` (from Accepted/Prepared; rv-guarded), with start time and node;
2. runs the backup or restore with progress patches every ``PROGRESS_INTERVAL_SECONDS`` and a
   log line each time (bytes/s, files, percent, ETA);
3. polls ``spec.cancel``: when set, moves to ``Canceling``, stops the data path (within
   ``CANCEL_DEADLINE_SECONDS``), moves to ``Canceled`` and exits 5; SIGTERM without a cancel
   request (pod deleted or evicted, Job deadline exceeded) stops it the same way but ends
   ``Failed`` with that reason, since nobody asked for the backup to be dropped;
4. on success: a DataUpload becomes ``Completed`` with ``snapshotID``, ``incrementalBytes`` and
   ``dataMoverResult``; a DataDownload is completed by the launcher after it rebinds the volume,
   so the mover only exits 0 with its result in the termination message;
5. on failure: ``Failed`` with one actionable message; the exit code says what kind of failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from jobs.contract import (
    DATAUPLOAD_KIND,
    DMC_PARALLEL_FILES_DOWNLOAD,
    DMC_PARALLEL_FILES_UPLOAD,
    DMC_WRITE_SPARSE_FILES,
    ENV_CR_KIND,
    ENV_CR_NAME,
    ENV_CR_NAMESPACE,
    ENV_CR_UID,
    ENV_DATAMOVER_CONFIG,
    ENV_NODE_NAME,
    ENV_PARALLEL,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_SNAPSHOT_ID,
    ENV_SOURCE_NAMESPACE,
    ENV_SOURCE_PVC,
    ENV_TAGS,
    ENV_TERMINATION_MESSAGE_PATH,
    ENV_VOLUME_MODE,
    ENV_VOLUME_PATH,
    PROGRESS_INTERVAL_SECONDS,
    TAG_DATAUPLOAD,
    TAG_SOURCE_NAMESPACE,
    TAG_SOURCE_PVC,
    TERMINATION_MESSAGE_PATH,
    VOLUME_MODE_BLOCK,
    ExitCode,
    Phase,
    TerminationMessage,
    encode_termination_message,
)
from jobs.engine.api import (
    PRUNE_UPLOAD_PARALLEL,
    DataPathOptions,
    Progress,
    backup,
    init_repository,
    open_repository,
    read_password,
    restore,
)
from jobs.errors import CanceledError, ConfigError, MoverError, RepositoryExistsError, RepositoryNotFoundError
from jobs.kube.status import CRStatus, rfc3339_now
from jobs.repository.repository import Repository

log = logging.getLogger("snapmover.job")
CANCEL_POLL_SECONDS = 2.0
WATCH_ATTEMPTS = 5  # broken cancel watches before falling back to polling
INIT_WAIT_ATTEMPTS = 20


@dataclass(frozen=True)
class JobEnv:
    """The mover's configuration, from the Job environment (validated before any I/O)."""

    kind: str
    namespace: str
    name: str
    uid: str
    volume_path: Path
    block: bool
    repository: str
    password_file: str
    source_namespace: str
    source_pvc: str
    snapshot_id: str
    tags: dict[str, str]
    options: DataPathOptions
    node: str

    @classmethod
    def from_environ(cls, env: dict[str, str], role: str) -> JobEnv:
        """Parse and validate; ConfigError names the first problem."""

        def need(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                raise ConfigError(f"the Job environment lacks {key}; was this Job created by the snapmover launcher?")
            return value

        kind = need(ENV_CR_KIND)
        if (role == "upload") != (kind == DATAUPLOAD_KIND):
            raise ConfigError(f"`snapmover job {role}` cannot run for a {kind}")
        try:
            tags = json.loads(env.get(ENV_TAGS) or "{}")
            dmc = json.loads(env.get(ENV_DATAMOVER_CONFIG) or "{}")
        except ValueError as e:
            raise ConfigError(f"{ENV_TAGS} / {ENV_DATAMOVER_CONFIG} is not valid JSON") from e
        if not isinstance(tags, dict) or not isinstance(dmc, dict):
            raise ConfigError(f"{ENV_TAGS} and {ENV_DATAMOVER_CONFIG} must be JSON objects")
        return cls(
            kind=kind,
            namespace=need(ENV_CR_NAMESPACE),
            name=need(ENV_CR_NAME),
            uid=env.get(ENV_CR_UID, ""),
            volume_path=Path(need(ENV_VOLUME_PATH)),
            block=env.get(ENV_VOLUME_MODE, "") == VOLUME_MODE_BLOCK,
            repository=need(ENV_REPOSITORY),
            password_file=need(ENV_PASSWORD_FILE),
            source_namespace=env.get(ENV_SOURCE_NAMESPACE, ""),
            source_pvc=env.get(ENV_SOURCE_PVC, ""),
            snapshot_id=env.get(ENV_SNAPSHOT_ID, "") if role == "download" else "",
            tags={str(k): str(v) for k, v in tags.items()},
            options=data_path_options(dmc, env.get(ENV_PARALLEL, ""), role),
            node=env.get(ENV_NODE_NAME, "") or socket.gethostname(),
        )


def _positive_int(value: str, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= 1024:
        raise ConfigError(f"{what} must be a whole number from 1 to 1024, not {value!r}")
    return number


def data_path_options(dmc: dict[str, Any], parallel: str, role: str) -> DataPathOptions:
    """Map Velero's dataMoverConfig keys (and the launcher's parallelism) onto DataPathOptions."""
    defaults = DataPathOptions()
    workers = _positive_int(parallel, "parallelism") if parallel else defaults.parallel
    key = DMC_PARALLEL_FILES_UPLOAD if role == "upload" else DMC_PARALLEL_FILES_DOWNLOAD
    if dmc.get(key) not in (None, ""):
        workers = _positive_int(str(dmc[key]), f"dataMoverConfig.{key}")
    sparse = defaults.write_sparse
    if dmc.get(DMC_WRITE_SPARSE_FILES) not in (None, ""):
        text = str(dmc[DMC_WRITE_SPARSE_FILES]).strip().lower()
        if text not in ("true", "false"):
            raise ConfigError(f"dataMoverConfig.{DMC_WRITE_SPARSE_FILES} must be true or false, not {text!r}")
        sparse = text == "true"
    return DataPathOptions(parallel=workers, write_sparse=sparse)


class ProgressReporter:
    """Throttled progress: CR patch + one log line per interval, and on demand at the end."""

    def __init__(self, cr: CRStatus) -> None:
        self._cr = cr
        self._last = 0.0
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self.latest: Progress | None = None
        self.stopped = False

    def __call__(self, p: Progress) -> None:
        with self._lock:
            self.latest = p
            now = time.monotonic()
            if self.stopped or now - self._last < PROGRESS_INTERVAL_SECONDS:
                return
            self._last = now
        self.emit(p)

    def emit(self, p: Progress) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = p.bytes_done / elapsed
        percent = 100.0 * p.bytes_done / p.total_bytes if p.total_bytes else 100.0
        eta = (p.total_bytes - p.bytes_done) / rate if rate > 0 and p.total_bytes else 0.0
        log.info(
            "progress %.1f%% %s/%s bytes, %d/%d files, %.1f MB/s, ETA %.0fs",
            percent,
            p.bytes_done,
            p.total_bytes,
            p.files_done,
            p.files_total,
            rate / 1e6,
            eta,
        )
        if time.monotonic() - self._start >= PROGRESS_INTERVAL_SECONDS:  # short runs: the final status says it all
            self._cr.patch_progress(p.total_bytes, p.bytes_done)


class CancelWatcher:
    """Watches ``spec.cancel`` (and listens for SIGTERM); sets ``event`` when the run must stop.

    One watch on the CR; should the API server refuse or keep breaking it, polling takes over."""

    def __init__(self, cr: CRStatus) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.requested = False  # True: spec.cancel (Canceled); False: SIGTERM (Failed)
        self._cr = cr
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)

    def start(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        self._thread.start()

    def _on_signal(self, *_: object) -> None:
        if not self.event.is_set():
            self.reason = (
                "the mover was stopped by SIGTERM (its pod was deleted or evicted, or the Job's "
                "activeDeadlineSeconds ran out) before it finished"
            )
        self.event.set()

    def _run(self) -> None:
        for attempt in range(WATCH_ATTEMPTS):
            try:
                for obj in self._cr.watch(self._done):
                    if self._canceled(obj):
                        return
                return  # stopped
            except (ApiException, HTTPError, ValueError) as e:
                log.debug("watch of the CR for cancel failed (%s), attempt %d", e, attempt + 1)
                if self._done.wait(CANCEL_POLL_SECONDS):
                    return
        log.warning("cannot watch the CR for cancel requests; polling it every %.0fs", CANCEL_POLL_SECONDS)
        while not self._done.wait(CANCEL_POLL_SECONDS):
            try:
                obj = self._cr.get()
            except MoverError as e:
                log.warning("cannot read the CR to check for cancel: %s", e)
                continue
            if self._canceled(obj):
                return

    def _canceled(self, obj: dict[str, Any]) -> bool:
        if (obj.get("spec") or {}).get("cancel") is True:
            self.reason = "canceled on request (spec.cancel)"
            self.requested = True
            self.event.set()
            return True
        return False

    def stop(self) -> None:
        self._done.set()


def _start_transition(node: str) -> Any:
    def decide(obj: dict[str, Any]) -> dict[str, Any] | None:
        phase = (obj.get("status") or {}).get("phase") or Phase.NEW
        if phase not in (Phase.ACCEPTED, Phase.PREPARED):
            raise MoverError(f"the CR is in phase {phase}, not Accepted/Prepared; refusing to start")
        return {"phase": Phase.IN_PROGRESS, "startTimestamp": rfc3339_now(), "node": node, "nodeOS": "linux"}

    return decide


def _open_or_init(url: str, password: str, options: DataPathOptions) -> Repository:
    try:
        return open_repository(url, password, parallel=options.parallel, upload_parallel=options.upload_parallel)
    except RepositoryNotFoundError:
        log.info("no repository at the storage location yet: initialising it")
        with contextlib.suppress(RepositoryExistsError):  # another mover initialised it at the same moment
            init_repository(url, password).close()
        for _ in range(INIT_WAIT_ATTEMPTS):
            try:
                return open_repository(
                    url, password, parallel=options.parallel, upload_parallel=options.upload_parallel
                )
            except RepositoryNotFoundError:
                time.sleep(0.5)  # the winning mover has not written its key file yet
        return open_repository(url, password, parallel=options.parallel, upload_parallel=options.upload_parallel)


def write_termination_message(msg: TerminationMessage) -> None:
    """Best-effort write of the one-line JSON termination message."""
    path = os.environ.get(ENV_TERMINATION_MESSAGE_PATH, TERMINATION_MESSAGE_PATH)
    try:
        Path(path).write_text(encode_termination_message(msg) + "\n")
    except OSError as e:
        log.warning("cannot write the termination message to %s: %s", path, e)


def run_job(role: str) -> int:
    """The whole Job: returns the process exit code (never raises for a MoverError)."""
    env = JobEnv.from_environ(dict(os.environ), role)
    cr = CRStatus(env.kind, env.namespace, env.name, env.uid)
    watcher = CancelWatcher(cr)
    progress = ProgressReporter(cr)
    started = time.monotonic()
    try:
        watcher.start()  # its watch also delivers the CR the first transition starts from
        if cr.transition(_start_transition(env.node)) is None:
            log.warning("%s %s is already terminal; nothing to do", env.kind, env.name)
            return ExitCode.OK
        log.info("%s %s/%s: %s started on %s", env.kind, env.namespace, env.name, role, env.node)
        password = read_password(env.password_file)
        repo = _open_or_init(env.repository, password, env.options)
        try:
            if role == "upload":
                return _upload(env, cr, repo, watcher, progress, started)
            return _download(env, repo, watcher, progress, started)
        finally:
            repo.close()
    except CanceledError:
        return _stopped(cr, watcher)
    except MoverError as e:
        if watcher.event.is_set():
            return _stopped(cr, watcher)
        return _failed(cr, str(e), e.exit_code)
    finally:
        watcher.stop()


def _upload(
    env: JobEnv, cr: CRStatus, repo: Repository, watcher: CancelWatcher, progress: ProgressReporter, started: float
) -> int:
    tags = {**env.tags, TAG_DATAUPLOAD: env.name}
    if env.source_namespace:
        tags[TAG_SOURCE_NAMESPACE] = env.source_namespace
    if env.source_pvc:
        tags[TAG_SOURCE_PVC] = env.source_pvc
    result = backup(
        repo,
        env.volume_path,
        mode="block" if env.block else "filesystem",
        tags=tags,
        parent="auto",
        options=env.options,
        on_progress=progress,
        cancel=watcher.event,
    )
    watcher.stop()
    progress.stopped = True
    seconds = time.monotonic() - started
    # Empty strings would reach the API server as null and fail validation: leave them out.
    summary: dict[str, str] = {
        "repository": repo.id,
        "snapshotID": result.snapshot_id,
        "files": str(result.files),
        "totalBytes": str(result.total_bytes),
        "newBytes": str(result.incremental_bytes),
        "storedBytes": str(result.stored_bytes),
        "durationSeconds": f"{seconds:.1f}",
    }
    if result.parent_id:
        summary["parent"] = result.parent_id

    def complete(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "phase": Phase.COMPLETED,
            "snapshotID": result.snapshot_id,
            "incrementalBytes": result.incremental_bytes,
            "completionTimestamp": rfc3339_now(),
            "path": str(env.volume_path),
            "dataMoverResult": summary,
            "progress": {"totalBytes": result.total_bytes, "bytesDone": result.total_bytes},
        }

    cr.transition(complete)
    log.info(
        "backup complete: snapshot %s, %d files, %d bytes (%d new, %d stored) in %.1fs (%.1f MB/s)",
        result.snapshot_id,
        result.files,
        result.total_bytes,
        result.incremental_bytes,
        result.stored_bytes,
        seconds,
        result.total_bytes / max(seconds, 1e-6) / 1e6,
    )
    write_termination_message(
        TerminationMessage(
            phase=Phase.COMPLETED,
            snapshotID=result.snapshot_id,
            message="",
            totalBytes=result.total_bytes,
            incrementalBytes=result.incremental_bytes,
        )
    )
    return ExitCode.OK


def _download(env: JobEnv, repo: Repository, watcher: CancelWatcher, progress: ProgressReporter, started: float) -> int:
    if not env.snapshot_id:
        raise ConfigError("the DataDownload has no snapshotID to restore")
    result = restore(
        repo,
        env.snapshot_id,
        env.volume_path,
        mode="block" if env.block else "filesystem",
        options=env.options,
        on_progress=progress,
        cancel=watcher.event,
    )
    watcher.stop()
    progress.stopped = True
    seconds = time.monotonic() - started
    progress.emit(Progress(result.total_bytes, result.total_bytes, result.files, result.files, 0))
    log.info(
        "restore complete: snapshot %s, %d files, %d bytes in %.1fs",
        result.snapshot_id,
        result.files,
        result.total_bytes,
        seconds,
    )
    write_termination_message(
        TerminationMessage(
            phase=Phase.COMPLETED,
            snapshotID=result.snapshot_id,
            message="",
            totalBytes=result.total_bytes,
        )
    )
    return ExitCode.OK


def _stopped(cr: CRStatus, watcher: CancelWatcher) -> int:
    """The data path stopped on request (Canceled, exit 5) or by a signal (Failed, exit 1)."""
    if watcher.requested:
        return _canceled(cr, watcher.reason)
    return _failed(cr, watcher.reason or "stopped before finishing", ExitCode.FAILED)


def _canceled(cr: CRStatus, reason: str) -> int:
    def canceling(obj: dict[str, Any]) -> dict[str, Any]:
        return {"phase": Phase.CANCELING, "message": reason}

    def canceled(obj: dict[str, Any]) -> dict[str, Any]:
        return {"phase": Phase.CANCELED, "message": reason, "completionTimestamp": rfc3339_now()}

    try:
        cr.transition(canceling)
        cr.transition(canceled)
    except MoverError as e:
        log.error("could not record the cancel in the CR: %s", e)
    log.warning("canceled: %s", reason)
    write_termination_message(TerminationMessage(phase=Phase.CANCELED, message=reason))
    return ExitCode.CANCELED


def _failed(cr: CRStatus, message: str, code: int) -> int:
    def failed(obj: dict[str, Any]) -> dict[str, Any]:
        return {"phase": Phase.FAILED, "message": message, "completionTimestamp": rfc3339_now()}

    try:
        cr.transition(failed)
    except MoverError as e:
        log.error("could not record the failure in the CR: %s", e)
    log.error("failed: %s", message)
    write_termination_message(TerminationMessage(phase=Phase.FAILED, message=message))
    return code


def run_forget() -> int:
    """Forget ``$SNAPMOVER_SNAPSHOT_ID`` in ``$SNAPMOVER_REPOSITORY``; a missing one is already forgotten."""
    env = os.environ
    url, sid = env.get(ENV_REPOSITORY, ""), env.get(ENV_SNAPSHOT_ID, "")
    if not url or not sid:
        raise ConfigError(f"the Job environment lacks {ENV_REPOSITORY} or {ENV_SNAPSHOT_ID}")
    try:
        repo = open_repository(url, read_password(env.get(ENV_PASSWORD_FILE)))
    except RepositoryNotFoundError:
        log.info("no repository: snapshot %s is already gone", sid)
        return ExitCode.OK
    try:
        if sid in repo.snapshot_ids():
            with repo.lock(exclusive=False):
                repo.forget([sid])
            log.info("forgot snapshot %s; maintenance (prune) frees its data", sid)
        else:
            log.info("snapshot %s is already forgotten", sid)
    finally:
        repo.close()
    return ExitCode.OK


def run_maintenance() -> int:
    """Prune ``$SNAPMOVER_REPOSITORY``; logs what was freed (one line) for the Job's logs."""
    env = os.environ
    url = env.get(ENV_REPOSITORY, "")
    if not url:
        raise ConfigError(f"the Job environment lacks {ENV_REPOSITORY}")
    try:
        repo = open_repository(url, read_password(env.get(ENV_PASSWORD_FILE)), upload_parallel=PRUNE_UPLOAD_PARALLEL)
    except RepositoryNotFoundError:
        log.info("no repository yet: nothing to maintain")
        return ExitCode.OK
    try:
        stats = repo.prune()
    finally:
        repo.close()
    log.info("maintenance done: %s", " ".join(f"{k}={v}" for k, v in vars(stats).items()))
    return ExitCode.OK
