"""The data path's public API: open repositories, back up and restore volumes.

Called by the CLI (``snapmover upload|download|repo ...``) and the Job runner (``jobs.kube``).
It joins the layers below: :mod:`jobs.storage` (where objects live), :mod:`jobs.repository`
(blobs, packs, snapshots) and :mod:`jobs.volume` (files and devices), through the pipelines in
:mod:`jobs.engine.backup` and :mod:`jobs.engine.restore`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jobs.contract import ENV_PASSWORD, ENV_PASSWORD_FILE, SOURCE_TAGS
from jobs.engine.backup import FilesystemBackup, TreeStats, backup_block
from jobs.engine.pipeline import Abort
from jobs.engine.procs import ParallelBackup, backup_processes
from jobs.engine.progress import Progress, ProgressCallback, ProgressTracker
from jobs.engine.restore import RestoreStats, restore_block, restore_filesystem
from jobs.errors import ConfigError, SnapshotNotFoundError, UsageError, VolumeIOError
from jobs.repository.repository import Repository
from jobs.repository.snapshots import SnapshotManifest
from jobs.repository.writer import OPEN_PACKS, PACKS_IN_FLIGHT
from jobs.storage.url import open_storage
from jobs.volume.patterns import PathFilter, Selection

__all__ = [
    "PRUNE_UPLOAD_PARALLEL",
    "BackupResult",
    "DataPathOptions",
    "ParentChoice",
    "ParentNotFoundError",
    "Progress",
    "RestoreResult",
    "backup",
    "init_repository",
    "open_repository",
    "read_password",
    "restore",
]

MiB: Final = 1024 * 1024
MODE_FILESYSTEM: Final = "filesystem"
MODE_BLOCK: Final = "block"
MODES: Final = (MODE_FILESYSTEM, MODE_BLOCK)
PARENT_AUTO: Final = "auto"
PARENT_NONE: Final = "none"
BACKUP_FULL: Final = "full"
BACKUP_INCREMENTAL: Final = "incremental"
MIN_DATA_BUDGET_BYTES: Final = 32 * MiB
PIPELINE_LIMIT_BYTES: Final = 144 * MiB  # the most a default backup gives its pipeline
RSS_TARGET_BYTES: Final = 256 * MiB  # peak RSS a default backup stays under
# Measured here beyond the pipeline's own buffers at its peak: interpreter heap churn, per-thread
# compression/read buffers, allocator slack (bench/: local and S3 runs of the 2 GiB tree).
RSS_RESERVE_BYTES: Final = 60 * MiB


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") or 4096)
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class DataPathOptions:
    """Knobs of the data path (the Job runner maps Velero's dataMoverConfig onto them)."""

    parallel: int = field(default_factory=lambda: os.cpu_count() or 2)  # files/blocks processed concurrently
    # Worker processes of a filesystem backup (opt-in: each adds its own memory, ~70 MiB at
    # 100k small files, which the default memory budget does not cover yet); None: the CPUs
    # this process may use, at most ``parallel`` (jobs.engine.procs.backup_processes).
    processes: int | None = 1
    upload_parallel: int = 4  # packs uploaded concurrently
    pack_target_bytes: int = 16 * MiB
    write_sparse: bool = True  # restore: holes for zero runs
    # In-flight data budget of the pipeline (chunks + packs). None: what is left of
    # RSS_TARGET_BYTES after what the process holds when the backup starts (the S3 client's
    # models, the index) and RSS_RESERVE_BYTES, at most PIPELINE_LIMIT_BYTES.
    memory_limit_bytes: int | None = None

    def pipeline_limit_bytes(self, resident: int) -> int:
        """The pipeline's budget for a process that holds ``resident`` bytes before it starts."""
        if self.memory_limit_bytes is not None:
            return self.memory_limit_bytes
        return min(PIPELINE_LIMIT_BYTES, RSS_TARGET_BYTES - RSS_RESERVE_BYTES - resident)

    def data_budget_bytes(self, resident: int = 0) -> int:
        """Bytes of chunk data allowed between reading and storing (the rest is for packs).

        The repository holds one buffer of about a pack per pack in flight and per open pack
        (data and tree): blobs are sealed into it and it is written as is.
        """
        in_flight = max(PACKS_IN_FLIGHT, self.upload_parallel)
        packs = (in_flight + OPEN_PACKS) * self.pack_target_bytes
        return max(MIN_DATA_BUDGET_BYTES, self.pipeline_limit_bytes(resident) - packs)


@dataclass(frozen=True)
class BackupResult:
    """What an upload did; ``incremental_bytes`` is the new data it stored (before compression).

    ``full_reason`` says why the backup had no parent ('' for an incremental one)."""

    snapshot_id: str
    parent_id: str | None
    total_bytes: int
    incremental_bytes: int
    stored_bytes: int
    files: int
    dirs: int
    duration_seconds: float
    excludes: list[str] = field(default_factory=list)  # the patterns recorded in the snapshot
    full_reason: str = ""

    @property
    def backup_mode(self) -> str:
        """ "incremental" (against ``parent_id``) or "full"."""
        return BACKUP_INCREMENTAL if self.parent_id else BACKUP_FULL


@dataclass(frozen=True)
class ParentChoice:
    """The parent :func:`select_parent` chose, or (``manifest`` None) why the backup is full."""

    manifest: SnapshotManifest | None
    full_reason: str = ""


class ParentNotFoundError(SnapshotNotFoundError):
    """The parent snapshot id given for a backup is not in the repository."""

    def __init__(self, parent: str, location: str) -> None:
        super().__init__(f"parent snapshot {parent!r} is not in the repository at {location}")
        self.parent = parent


@dataclass(frozen=True)
class RestoreResult:
    """What a download wrote."""

    snapshot_id: str
    total_bytes: int
    files: int
    duration_seconds: float


def read_password(password_file: str | None = None) -> str:
    """The repository password: ``password_file``, else $SNAPMOVER_PASSWORD_FILE, else $SNAPMOVER_PASSWORD.

    Raises ConfigError when none is set, the file cannot be read, or the password is empty. A
    single trailing newline of a password file is ignored.
    """
    path = password_file or os.environ.get(ENV_PASSWORD_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the password file {path}: {getattr(e, 'strerror', None) or e}") from e
        password = password.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"the password file {path} is empty")
        return password
    password = os.environ.get(ENV_PASSWORD, "")
    if not password:
        raise ConfigError(f"no repository password: use --password-file or set {ENV_PASSWORD_FILE} or {ENV_PASSWORD}")
    return password


PRUNE_UPLOAD_PARALLEL: Final = 2  # repacked packs in flight during prune: bounds its memory (~16 MiB each)


def open_repository(
    url: str, password: str, *, parallel: int = 8, upload_parallel: int = 4, load_index: bool = True
) -> Repository:
    """Open the repository at ``url`` (UsageError, RepositoryNotFoundError, WrongPasswordError, ...).

    ``parallel`` sizes the storage connection pool, ``upload_parallel`` the concurrent pack uploads;
    without ``load_index`` the index is left empty (commands that read and write no blob: forget).
    """
    storage = open_storage(url, parallel=parallel)
    try:
        return Repository.open(storage, password, upload_parallel=upload_parallel, load_index=load_index)
    except BaseException:
        storage.close()
        raise


def init_repository(url: str, password: str, *, pack_target_bytes: int = 16 * MiB) -> Repository:
    """Create a repository at ``url``; RepositoryExistsError if one is there already."""
    storage = open_storage(url)
    try:
        return Repository.init(storage, password, pack_target_bytes=pack_target_bytes)
    except BaseException:
        storage.close()
        raise


def select_parent(repo: Repository, parent: str, *, source: str, mode: str, tags: Mapping[str, str]) -> ParentChoice:
    """The parent snapshot for an incremental backup (see :func:`backup`), or why there is none.

    Raises ParentNotFoundError for an id (or prefix) that matches no snapshot, UsageError for an
    ambiguous prefix."""
    if parent == PARENT_NONE:
        return ParentChoice(None, "parent none: a full backup was asked for")
    if parent not in ("", PARENT_AUTO):
        try:
            given = repo.find_snapshot(parent)
        except SnapshotNotFoundError as e:
            raise ParentNotFoundError(parent, repo.storage.location) from e
        if given.mode != mode:
            why = f"parent {given.id} given, but it is a {given.mode} snapshot and this a {mode} backup"
            return ParentChoice(None, why)
        return ParentChoice(_reloaded(repo, given))
    candidates = [s for s in repo.list_snapshots() if s.mode == mode]
    source_tags = {k: tags[k] for k in SOURCE_TAGS if k in tags}
    if source_tags:
        matches = [s for s in candidates if all(s.tags.get(k) == v for k, v in source_tags.items())]
        of = ", ".join(f"{k}={v}" for k, v in source_tags.items())
    else:
        matches = [s for s in candidates if s.source == source]
        of = source
    if not matches:
        return ParentChoice(None, f"no parent found: no earlier {mode} snapshot of {of} in the repository")
    return ParentChoice(_reloaded(repo, matches[-1]))


def _reloaded(repo: Repository, chosen: SnapshotManifest) -> SnapshotManifest:
    """``chosen``, with the repository's index reloaded when it does not know its root yet."""
    if chosen.root and bytes.fromhex(chosen.root) not in repo.index:
        # written by a backup that finished after this repository was opened (a concurrent mover):
        # its index file is newer than the ones read at open
        repo.reload_index()
    return chosen


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use {' or '.join(MODES)}")


def backup(
    repo: Repository,
    source: Path,
    *,
    mode: str = MODE_FILESYSTEM,
    tags: Mapping[str, str] | None = None,
    parent: str = PARENT_AUTO,
    options: DataPathOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    excludes: PathFilter | None = None,
) -> BackupResult:
    """Back up ``source`` (a directory, or a device/image with ``mode="block"``) into a new snapshot.

    ``excludes`` (filesystem mode only) leaves matching entries out without reading them; the
    snapshot records the patterns.

    ``parent``: "auto" (or "") = the latest snapshot of the same mode with the same
    ``jobs.contract.SOURCE_TAGS`` values (or, without those tags, the same source path); "none";
    or a snapshot id/prefix (ParentNotFoundError when none matches; a snapshot of the other mode
    gives a full backup). Unchanged files of the parent are not read. The result says whether
    the backup was full and why. Takes a shared lock.
    Raises CanceledError (within seconds of ``cancel.set()``; no snapshot is written, what was
    uploaded is indexed so a retry reuses it), VolumeIOError for a bad source, and whatever the
    repository raises. ``on_progress`` is called from worker threads at most ~1/s and at the end.
    """
    _check_mode(mode)
    excludes = excludes or PathFilter()
    if excludes and mode == MODE_BLOCK:
        raise UsageError("exclude patterns apply to filesystem backups only, not to --mode block")
    options = options or DataPathOptions()
    tags = dict(tags or {})
    source_path = os.path.abspath(source)
    if not os.path.exists(source_path):  # before taking the lock: a bad source changes nothing
        raise VolumeIOError(f"{source_path}: source does not exist")
    started = time.monotonic()
    progress = ProgressTracker(on_progress)
    abort = Abort(cancel)
    with repo.lock():
        choice = select_parent(repo, parent, source=source_path, mode=mode, tags=tags)
        parent_manifest = choice.manifest
        try:
            budget_options = dataclasses.replace(options, pack_target_bytes=repo.config.pack_target_bytes)
            stats = _run_backup(
                repo=repo,
                source=source_path,
                mode=mode,
                parent=parent_manifest,
                options=budget_options,
                progress=progress,
                abort=abort,
                excludes=excludes,
            )
        except BaseException:
            if abort.error is None and cancel is not None and cancel.is_set():
                repo.flush()  # index what was uploaded so a retry reuses it; no snapshot
            raise
        repo.flush()
        final = progress.finish()
        duration = time.monotonic() - started
        manifest = _manifest(source_path, mode, tags, parent_manifest, stats, final, duration, excludes)
        snapshot_id = repo.save_snapshot(manifest)
    return BackupResult(
        snapshot_id=snapshot_id,
        parent_id=manifest.parent,
        total_bytes=final.total_bytes,
        incremental_bytes=final.new_bytes,
        stored_bytes=stats.stored_bytes,
        files=stats.files,
        dirs=stats.dirs,
        duration_seconds=duration,
        excludes=excludes.texts,
        full_reason=choice.full_reason,
    )


def _manifest(
    source: str,
    mode: str,
    tags: dict[str, str],
    parent: SnapshotManifest | None,
    stats: TreeStats,
    final: Progress,
    duration: float,
    excludes: PathFilter,
) -> SnapshotManifest:
    """The manifest of a finished backup (its id is set when it is saved)."""
    return SnapshotManifest(
        time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        hostname=socket.gethostname(),
        source=source,
        mode=mode,
        tags=tags,
        root=stats.root,
        parent=parent.id if parent else None,
        summary={
            "total_bytes": final.total_bytes,
            "files": stats.files,
            "dirs": stats.dirs,
            "new_bytes": final.new_bytes,
            "stored_bytes": stats.stored_bytes,
            "duration_seconds": round(duration, 3),
        },
        excludes=excludes.texts,
    )


def _run_backup(
    *,
    repo: Repository,
    source: str,
    mode: str,
    parent: SnapshotManifest | None,
    options: DataPathOptions,
    progress: ProgressTracker,
    abort: Abort,
    excludes: PathFilter,
) -> TreeStats:
    if mode == MODE_BLOCK:
        return backup_block(repo, source, parallel=options.parallel, progress=progress, abort=abort)
    common: dict[str, Any] = {
        "parallel": options.parallel,
        "memory_budget_bytes": options.data_budget_bytes(resident_bytes()),
        "progress": progress,
        "abort": abort,
        "parent_root": parent.root if parent else None,
        "excludes": excludes,
    }
    workers = options.processes if options.processes is not None else backup_processes(options.parallel)
    if workers > 1:
        stats = ParallelBackup(repo, source, workers=workers, upload_parallel=options.upload_parallel, **common).run()
        if stats is not None:
            return stats  # else the storage cannot be shared with worker processes
    return FilesystemBackup(repo, source, **common).run()


def restore(
    repo: Repository,
    snapshot_id: str,
    target: Path,
    *,
    mode: str = MODE_FILESYSTEM,
    options: DataPathOptions | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    selection: Selection | None = None,
) -> RestoreResult:
    """Restore a snapshot (id or unique prefix) into ``target`` (a directory, or a device/image for block).

    ``selection`` (filesystem mode only): restore just the entries it takes (``--include``/``--exclude``).

    Every blob is verified before any of its bytes are written (IntegrityError, exit 3). Raises
    SnapshotNotFoundError, UsageError (the snapshot is of the other mode), VolumeIOError,
    CanceledError.
    """
    _check_mode(mode)
    if selection and mode == MODE_BLOCK:
        raise UsageError("--include/--exclude select files: they do not apply to --mode block")
    options = options or DataPathOptions()
    started = time.monotonic()
    manifest = repo.find_snapshot(snapshot_id)
    progress = ProgressTracker(on_progress)
    abort = Abort(cancel)
    run = restore_block if mode == MODE_BLOCK else functools.partial(restore_filesystem, selection=selection)
    stats: RestoreStats = run(
        repo,
        manifest.root,
        os.path.abspath(target),
        parallel=options.parallel,
        write_sparse=options.write_sparse,
        progress=progress,
        abort=abort,
    )
    progress.finish()
    return RestoreResult(
        snapshot_id=manifest.id,
        total_bytes=stats.total_bytes,
        files=stats.files,
        duration_seconds=time.monotonic() - started,
    )
