"""The mover inside a Job: ``snapmover job upload|download`` (DESIGN §3, §4).

Reads only the Job environment of :mod:`jobs.contract` (parsed by ``jobs.kube.env``) and the
mounted secret files; progress is ``jobs.kube.progress``, the phase changes are the pure decisions
of ``jobs.kube.decisions`` applied by ``CRStatus.transition``. Then:

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
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from jobs.contract import (
    DMC_EXCLUDES,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_SNAPSHOT_ID,
    ENV_TERMINATION_MESSAGE_PATH,
    PARENT_SNAPSHOT_FIELD,
    RESULT_BACKUP_MODE,
    RESULT_FULL_REASON,
    RESULT_PARENT,
    TAG_DATAUPLOAD,
    TAG_SOURCE_NAMESPACE,
    TAG_SOURCE_PVC,
    TERMINATION_MESSAGE_PATH,
    ExitCode,
    Phase,
    TerminationMessage,
    encode_termination_message,
)
from jobs.engine.api import (
    PRUNE_UPLOAD_PARALLEL,
    DataPathOptions,
    ParentNotFoundError,
    Progress,
    backup,
    init_repository,
    open_repository,
    read_password,
    restore,
)
from jobs.errors import (
    CanceledError,
    ConfigError,
    MoverError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    SnapshotNotFoundError,
)
from jobs.kube import decisions
from jobs.kube.env import JobEnv
from jobs.kube.progress import ProgressReporter
from jobs.kube.status import CRStatus, rfc3339_now
from jobs.repository.maintenance import prune
from jobs.repository.repository import Repository
from jobs.volume.patterns import PathFilter

log = logging.getLogger("snapmover.job")
CANCEL_POLL_SECONDS = 2.0
WATCH_ATTEMPTS = 5  # broken cancel watches before falling back to polling
INIT_WAIT_ATTEMPTS = 20


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
        if cr.transition(decisions.start(env.node)) is None:
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
    excludes = PathFilter.compile(env.excludes.splitlines(), f"dataMoverConfig.{DMC_EXCLUDES}")
    try:
        result = backup(
            repo,
            env.volume_path,
            mode="block" if env.block else "filesystem",
            tags=tags,
            parent=env.parent,
            options=env.options,
            on_progress=progress,
            cancel=watcher.event,
            excludes=excludes,
        )
    except ParentNotFoundError as e:
        raise SnapshotNotFoundError(
            f"{PARENT_SNAPSHOT_FIELD} {e.parent!r}: no such snapshot in the repository {repo.id}"
        ) from e
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
    summary[RESULT_BACKUP_MODE] = result.backup_mode
    if result.parent_id:
        summary[RESULT_PARENT] = result.parent_id
    if result.full_reason:
        summary[RESULT_FULL_REASON] = result.full_reason
    if result.excludes:
        summary[DMC_EXCLUDES] = "\n".join(result.excludes)

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
    try:
        cr.transition(decisions.canceling(reason))
        cr.transition(decisions.canceled(reason))
    except MoverError as e:
        log.error("could not record the cancel in the CR: %s", e)
    log.warning("canceled: %s", reason)
    write_termination_message(TerminationMessage(phase=Phase.CANCELED, message=reason))
    return ExitCode.CANCELED


def _failed(cr: CRStatus, message: str, code: int) -> int:
    try:
        cr.transition(decisions.failed(message))
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
        stats = prune(repo)
    finally:
        repo.close()
    log.info("maintenance done: %s", " ".join(f"{k}={v}" for k, v in vars(stats).items()))
    return ExitCode.OK
