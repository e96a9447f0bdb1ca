"""The ``snapmover`` command line: repository inspection, upload/download, and the Job entry point.

Commands are defined here (repository and data commands), in :mod:`jobs.kube.commands`
(``snapmover job upload|download``) and by plugins registered under the ``snapmover.commands``
entry-point group (the launcher package adds ``launcher`` and ``backup-pvc`` that way, so the
mover never imports the launcher). :func:`main` is the only place that catches broadly: a
:class:`~jobs.errors.MoverError` becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from jobs import __version__
from jobs.cli_help import add_epilogs, completion
from jobs.contract import ENV_PASSWORD, ENV_PASSWORD_FILE, ENV_REPOSITORY, ExitCode
from jobs.errors import IntegrityError, MoverError, UsageError, VolumeIOError
from jobs.kube.commands import job
from jobs.volume.patterns import PathFilter, Selection, read_pattern_file

if TYPE_CHECKING:  # the engine (and boto3 below it) is imported only by the commands that need it
    from jobs.engine.api import DataPathOptions, Progress
    from jobs.repository.repository import Repository

ENTRY_POINT_GROUP = "snapmover.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="snapmover")
def cli() -> None:
    """snapmover: back up and restore Kubernetes volumes to an encrypted, deduplicating repository."""


cli.add_command(job)
job.hidden = True  # the mover Job's entry point: `snapmover job --help` still works
cli.add_command(completion)


# --- shared options and output ----------------------------------------------------------------

MiB = 1024 * 1024
PROGRESS_PRINT_INTERVAL_SECONDS = 5.0

F = TypeVar("F", bound=Callable[..., Any])


def _repository_options(func: F) -> F:
    """--repo, --password-file and --json, shared by every repository command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(func)
    func = click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        help=f"File holding the repository password (else ${ENV_PASSWORD_FILE}, else ${ENV_PASSWORD}).",
    )(func)
    func = click.option(
        "-r",
        "--repo",
        "repo_url",
        envvar=ENV_REPOSITORY,
        help=f"Repository URL: file:///abs/path or s3://bucket/prefix[?endpoint=...] (or ${ENV_REPOSITORY}).",
    )(func)
    return func


def _parallel_option(func: F) -> F:
    return click.option(
        "--parallel",
        type=click.IntRange(1, 256),
        default=None,
        help="Worker threads (default: CPU count).",
    )(func)


def _tag_option(help_text: str) -> Callable[[F], F]:
    return click.option("--tag", "tags", multiple=True, metavar="K=V", help=help_text)


def _parse_tags(pairs: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"malformed tag {pair!r}: use KEY=VALUE")
        tags[key] = value
    return tags


def _require_url(repo_url: str | None) -> str:
    if not repo_url:
        raise UsageError(f"no repository given: use --repo or set {ENV_REPOSITORY}")
    return repo_url


@contextmanager
def _opened(
    repo_url: str | None,
    password_file: str | None,
    *,
    parallel: int = 8,
    upload_parallel: int = 4,
    load_index: bool = True,
) -> Iterator[Repository]:
    from jobs.engine.api import open_repository, read_password

    url = _require_url(repo_url)
    repo = open_repository(
        url, read_password(password_file), parallel=parallel, upload_parallel=upload_parallel, load_index=load_index
    )
    try:
        yield repo
    finally:
        repo.close()


def _emit(as_json: bool, data: Mapping[str, Any], lines: Iterable[str]) -> None:
    if as_json:
        click.echo(json.dumps(data, sort_keys=True, default=str))
    else:
        for line in lines:
            click.echo(line)


def _as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(vars(value))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _duration_text(total_bytes: int, seconds: float) -> str:
    return f"duration: {seconds:.2f} s ({_human_bytes(total_bytes / max(seconds, 1e-9))}/s)"


PROGRESS_TTY_INTERVAL_SECONDS = 0.5


class ProgressReporter:
    """The progress callback of upload/download, writing to stderr (stdout stays the result).

    On a terminal: one line rewritten in place twice a second; under ``--json``: one NDJSON object
    per interval (``{"progress": {...}}``); otherwise a plain line every few seconds (logs).
    Call :meth:`close` at the end so a terminal line ends with a newline."""

    def __init__(self, as_json: bool, *, tty: bool | None = None) -> None:
        self.as_json = as_json
        self.tty = (sys.stderr.isatty() if tty is None else tty) and not as_json
        self.interval = PROGRESS_TTY_INTERVAL_SECONDS if self.tty else PROGRESS_PRINT_INTERVAL_SECONDS
        self.started = time.monotonic()
        self.last = self.started
        self.width = 0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = p.bytes_done / max(now - self.started, 1e-9)
        pct = 100.0 * p.bytes_done / p.total_bytes if p.total_bytes else 0.0
        if self.as_json:
            fields = {
                "bytes_done": p.bytes_done,
                "total_bytes": p.total_bytes,
                "files_done": p.files_done,
                "files_total": p.files_total,
                "percent": round(pct, 1),
                "bytes_per_second": round(rate),
            }
            click.echo(json.dumps({"progress": fields}, sort_keys=True), err=True)
            return
        line = (
            f"progress: {_human_bytes(p.bytes_done)} of {_human_bytes(p.total_bytes)} ({pct:.0f}%), "
            f"{p.files_done}/{p.files_total} files, {_human_bytes(rate)}/s"
        )
        if self.tty:
            click.echo("\r" + line.ljust(self.width), err=True, nl=False)
            self.width = len(line)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.width:
            click.echo(err=True)
            self.width = 0


@contextmanager
def _progress(as_json: bool) -> Iterator[ProgressReporter]:
    reporter = ProgressReporter(as_json)
    try:
        yield reporter
    finally:
        reporter.close()


@contextmanager
def _cancel_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so the pipeline stops cleanly (CanceledError, exit 5)."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(_signum: int, _frame: object) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _options(parallel: int | None, **extra: Any) -> DataPathOptions:
    from jobs.engine.api import DataPathOptions

    values: dict[str, Any] = dict(extra)
    if parallel is not None:
        values["parallel"] = parallel
    return DataPathOptions(**values)


PATTERN_RULES: Final = """\b
Exclude patterns (gitignore-like; paths relative to the source directory):
  name        no "/" inside: matches that name at any depth (files and directories)
  /x, a/b     a "/" at the start or in the middle anchors the pattern at the source root
  dir/        a trailing "/" matches directories only
  * ? [a-z]   any run of characters / one character / one of a set, never across "/";
              [!a-z] or [^a-z] negates the set; a backslash makes the next character literal
  **          a whole component: **/x at any depth, x/** everything inside x, a/**/b any
              directories between; elsewhere ** is a plain *
  !pattern    re-includes what an earlier pattern excluded (the last match wins); nothing inside
              an excluded directory can be re-included: it is never read
  exclude files: one pattern a line, blank lines and lines starting with # ignored"""


def _exclude_filter(patterns: tuple[str, ...], files: tuple[str, ...]) -> PathFilter:
    """The exclude files' patterns, then the --exclude ones; an error names the file or option."""
    parts = [PathFilter.compile(read_pattern_file(path), f"--exclude-file {path}") for path in files]
    parts.append(PathFilter.compile(patterns, "--exclude"))
    return PathFilter(tuple(p for part in parts for p in part.patterns))


def _filesystem_snapshot(repository: Repository, snapshot_id: str) -> str:
    """The root tree of a filesystem snapshot (what ls and dump read); UsageError for a block one."""
    manifest = repository.find_snapshot(snapshot_id)
    if manifest.mode != "filesystem":
        raise UsageError(f"snapshot {manifest.id[:16]} is a {manifest.mode} snapshot: ls and dump read files")
    return manifest.root


# --- repo ---------------------------------------------------------------------------------------


@cli.group()
def repo() -> None:
    """Create and inspect a repository."""


@repo.command("init")
@_repository_options
@click.option(
    "--pack-size",
    "pack_size_mib",
    type=click.IntRange(1, 512),
    default=16,
    show_default=True,
    help="Target pack size in MiB.",
)
def repo_init(repo_url: str | None, password_file: str | None, as_json: bool, pack_size_mib: int) -> None:
    """Initialise a new encrypted repository."""
    from jobs.engine.api import init_repository, read_password

    url = _require_url(repo_url)
    repository = init_repository(url, read_password(password_file), pack_target_bytes=pack_size_mib * MiB)
    try:
        _emit(
            as_json,
            {"repository_id": repository.id, "location": repository.storage.location},
            [f"created repository {repository.id} at {repository.storage.location}"],
        )
    finally:
        repository.close()


@repo.command("info")
@_repository_options
def repo_info(repo_url: str | None, password_file: str | None, as_json: bool) -> None:
    """Show the repository's id, configuration and size."""
    with _opened(repo_url, password_file) as repository:
        stats = _as_dict(repository.stats())
        config = _as_dict(repository.config)
        config.pop("cdc_seed", None)  # secret: keyed chunk boundaries
        data = {
            "repository_id": repository.id,
            "location": repository.storage.location,
            "config": config,
            "stats": stats,
        }
        lines = [f"repository {repository.id} at {repository.storage.location}"]
        lines += [f"  {k}: {v}" for k, v in sorted(config.items())]
        lines += [f"  {k}: {v}" for k, v in sorted(stats.items())]
        _emit(as_json, data, lines)


@repo.command("check")
@_repository_options
@click.option("--read-data", is_flag=True, help="Also download and verify every blob.")
def repo_check(repo_url: str | None, password_file: str | None, as_json: bool, read_data: bool) -> None:
    """Verify the repository's structure (and with --read-data every byte); exit 3 on errors."""
    from jobs.repository.maintenance import check

    with _opened(repo_url, password_file) as repository:
        report = check(repository, read_data=read_data)
    errors = list(report.errors)
    _emit(
        as_json,
        {**_as_dict(report), "ok": not errors},
        [f"error: {e}" for e in errors] + [f"check found {len(errors)} error(s)" if errors else "check passed"],
    )
    if errors:
        raise IntegrityError(f"repository check found {len(errors)} error(s); first: {errors[0]}")


@repo.command("unlock")
@_repository_options
@click.option("--all", "remove_all", is_flag=True, help="Remove every lock, not only stale ones.")
def repo_unlock(repo_url: str | None, password_file: str | None, as_json: bool, remove_all: bool) -> None:
    """Remove stale locks (or all locks with --all)."""
    with _opened(repo_url, password_file) as repository:
        removed = repository.unlock(stale_only=not remove_all)
    _emit(as_json, {"removed_locks": removed}, [f"removed {removed} lock(s)"])


# --- data ---------------------------------------------------------------------------------------


@cli.command()
@_repository_options
@click.option("--source", required=True, type=click.Path(), help="Directory (or device/image with --mode block).")
@click.option("--mode", type=click.Choice(["filesystem", "block"]), default="filesystem", show_default=True)
@_tag_option("Snapshot tag (repeatable).")
@click.option(
    "--parent",
    default="auto",
    show_default=True,
    help="auto (the latest snapshot of the same source) | none (a full backup) | snapshot id or prefix.",
)
@click.option(
    "--exclude", "excludes", multiple=True, metavar="PATTERN", help="Leave matching entries out (repeatable)."
)
@click.option(
    "--exclude-file",
    "exclude_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="File of exclude patterns, one a line (repeatable; read before the --exclude patterns).",
)
@_parallel_option
@click.option(
    "--processes",
    type=click.IntRange(0, 64),
    default=1,
    show_default=True,
    help="Processes for a filesystem backup's per-file work (0: the CPUs this process may use). "
    "More than 1 is faster on many small files; each process adds its own memory.",
)
def upload(
    *,
    repo_url: str | None,
    password_file: str | None,
    as_json: bool,
    source: str,
    mode: str,
    tags: tuple[str, ...],
    parent: str,
    excludes: tuple[str, ...],
    exclude_files: tuple[str, ...],
    parallel: int | None,
    processes: int,
) -> None:
    """Back up a directory or block volume; prints the snapshot id last.

    Excluded entries are not read at all (an excluded directory is not descended into); the
    snapshot records the patterns (`snapshots --json`)."""
    from jobs.engine.api import backup

    tag_map = _parse_tags(tags)
    exclude_filter = _exclude_filter(excludes, exclude_files)
    options = _options(parallel, processes=processes or None)
    if not os.path.lexists(source):
        raise VolumeIOError(f"{source}: source does not exist")
    with (
        _opened(
            repo_url, password_file, parallel=options.upload_parallel * 2, upload_parallel=options.upload_parallel
        ) as repository,
        _cancel_on_signals() as cancel,
        _progress(as_json) as progress,
    ):
        result = backup(
            repository,
            Path(source),
            mode=mode,
            tags=tag_map,
            parent=parent,
            options=options,
            on_progress=progress,
            cancel=cancel,
            excludes=exclude_filter,
        )
    _emit(
        as_json,
        {**_as_dict(result), "backup_mode": result.backup_mode},
        [
            f"files: {result.files}, dirs: {result.dirs}, total: {_human_bytes(result.total_bytes)}",
            f"new data: {_human_bytes(result.incremental_bytes)}, stored: {_human_bytes(result.stored_bytes)}",
            f"parent: {result.parent_id or '-'}, {_duration_text(result.total_bytes, result.duration_seconds)}",
            f"{result.backup_mode} backup" + (f" ({result.full_reason})" if result.full_reason else ""),
            result.snapshot_id,
        ],
    )


@cli.command()
@_repository_options
@click.option("--snapshot", "snapshot_id", required=True, help="Snapshot id or unique prefix.")
@click.option("--target", required=True, type=click.Path(), help="Directory (or device/image with --mode block).")
@click.option("--mode", type=click.Choice(["filesystem", "block"]), default="filesystem", show_default=True)
@click.option(
    "--sparse/--no-sparse",
    default=True,
    show_default=True,
    help="Leave zero runs as holes (files, images); --no-sparse writes zeros.",
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATTERN",
    help="Restore only matching entries (a directory with all it holds; repeatable).",
)
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="Do not restore matching entries.")
@_parallel_option
def download(
    *,
    repo_url: str | None,
    password_file: str | None,
    as_json: bool,
    snapshot_id: str,
    target: str,
    mode: str,
    sparse: bool,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    parallel: int | None,
) -> None:
    """Restore a snapshot into a directory or onto a block volume (every blob verified first).

    --include/--exclude restore a subset of a filesystem snapshot with full metadata: an entry is
    restored when it (or a directory above it) matches an --include (no --include: everything)
    and no --exclude matches it or a directory above it. The directories leading to it are
    restored with their own metadata. Patterns follow the rules below."""
    from jobs.engine.api import restore

    selection = Selection(PathFilter.compile(includes, "--include"), PathFilter.compile(excludes, "--exclude"))
    options = _options(parallel, write_sparse=sparse)
    with (
        _opened(repo_url, password_file, parallel=options.parallel * 2) as repository,
        _cancel_on_signals() as cancel,
        _progress(as_json) as progress,
    ):
        result = restore(
            repository,
            snapshot_id,
            Path(target),
            mode=mode,
            options=options,
            on_progress=progress,
            cancel=cancel,
            selection=selection,
        )
    _emit(
        as_json,
        _as_dict(result),
        [
            f"restored snapshot {result.snapshot_id} into {target}",
            f"files: {result.files}, total: {_human_bytes(result.total_bytes)}, "
            + _duration_text(result.total_bytes, result.duration_seconds),
        ],
    )


for _command in (upload, download):
    _command.help = f"{inspect.cleandoc(_command.help or '')}\n\n{PATTERN_RULES}"


def _entry_json(entry: Any) -> dict[str, Any]:
    node = entry.node
    data: dict[str, Any] = {
        "path": "/" + entry.path,
        "name": node.name if entry.path else "/",
        "type": node.type,
        "mode": f"{node.mode:04o}",
        "uid": node.uid,
        "gid": node.gid,
        "size": node.size,
        "mtime": _rfc3339_ns(node.mtime_ns),
    }
    if node.target:
        data["target"] = node.target
    if node.nlink > 1:
        data["nlink"] = node.nlink
    return data


def _rfc3339_ns(ns: int) -> str:
    from datetime import UTC, datetime

    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


_TYPE_LETTERS: Final = {"dir": "d", "symlink": "l", "fifo": "p", "chardev": "c", "blockdev": "b", "socket": "s"}


def _long_line(entry: Any) -> str:
    """An ``ls -l``-like line: mode, owner, size, mtime, name (-> symlink target)."""
    import stat as stat_module

    node = entry.node
    perms = stat_module.filemode(node.mode)[1:]
    mtime = _rfc3339_ns(node.mtime_ns)[:19].replace("T", " ")
    name = ("/" + entry.path) if entry.path else "/"
    line = f"{_TYPE_LETTERS.get(node.type, '-')}{perms} {node.uid:>6} {node.gid:>6} {node.size:>14} {mtime} {name}"
    return f"{line} -> {node.target}" if node.target else line


@cli.command("ls")
@_repository_options
@click.argument("snapshot_id", metavar="SNAPSHOT")
@click.argument("path", default="/")
def ls_command(repo_url: str | None, password_file: str | None, as_json: bool, snapshot_id: str, path: str) -> None:
    """List PATH (default: the root) of a filesystem SNAPSHOT: mode, owner (uid gid), size, mtime
    (UTC), name and symlink target. A directory lists its entries, anything else itself; --json
    prints one JSON object per entry and line."""
    from jobs.engine.browse import list_path

    with _opened(repo_url, password_file) as repository:
        entries = list_path(repository, _filesystem_snapshot(repository, snapshot_id), path)
    for entry in entries:
        click.echo(json.dumps(_entry_json(entry), sort_keys=True) if as_json else _long_line(entry))


@cli.command()
@_repository_options
@click.argument("snapshot_id", metavar="SNAPSHOT")
@click.argument("path")
def dump(repo_url: str | None, password_file: str | None, as_json: bool, snapshot_id: str, path: str) -> None:
    """Write the content of the file PATH of SNAPSHOT to stdout, byte for byte (every blob verified).

    A directory (or any other non-file) is an error with exit code 2. --json is accepted for
    symmetry and changes nothing: the output is the file."""
    from jobs.engine.browse import dump_file

    del as_json
    with _opened(repo_url, password_file) as repository:
        dump_file(repository, _filesystem_snapshot(repository, snapshot_id), path, sys.stdout.buffer)


def _manifest_dict(m: Any) -> dict[str, Any]:
    return _as_dict(m)


@cli.command()
@_repository_options
@_tag_option("Only snapshots with this tag (repeatable; all must match).")
def snapshots(repo_url: str | None, password_file: str | None, as_json: bool, tags: tuple[str, ...]) -> None:
    """List snapshots, oldest first."""
    wanted = _parse_tags(tags)
    with _opened(repo_url, password_file) as repository:
        found = [s for s in repository.list_snapshots() if all(s.tags.get(k) == v for k, v in wanted.items())]
    lines = [f"{'ID':<16} {'TIME':<27} {'MODE':<10} {'SIZE':>12}  SOURCE  TAGS"]
    for s in found:
        size = _human_bytes(float(s.summary.get("total_bytes", 0)))
        tag_text = ",".join(f"{k}={v}" for k, v in sorted(s.tags.items()))
        lines.append(f"{s.id[:16]:<16} {s.time:<27} {s.mode:<10} {size:>12}  {s.source}  {tag_text}")
    _emit(as_json, {"snapshots": [_manifest_dict(s) for s in found]}, lines)


@cli.command()
@_repository_options
@click.argument("snapshot_ids", nargs=-1)
@click.option("--keep-last", type=click.IntRange(0), default=None, help="Keep the N most recent snapshots.")
@click.option("--keep-daily", type=click.IntRange(0), default=None, help="Keep the last snapshot of N days.")
@click.option("--keep-weekly", type=click.IntRange(0), default=None, help="Keep the last snapshot of N weeks.")
@click.option("--keep-monthly", type=click.IntRange(0), default=None, help="Keep the last snapshot of N months.")
@_tag_option("Apply the policy only to snapshots with this tag (repeatable).")
def forget(
    *,
    repo_url: str | None,
    password_file: str | None,
    as_json: bool,
    snapshot_ids: tuple[str, ...],
    keep_last: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    tags: tuple[str, ...],
) -> None:
    """Remove snapshots by id, or by a keep policy; run `prune` afterwards to free space."""
    from jobs.repository.policy import select_forget

    policy = {
        "keep_last": keep_last,
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
    }
    has_policy = any(v is not None for v in policy.values())
    if bool(snapshot_ids) == has_policy:
        raise UsageError("give either snapshot ids or --keep-* options")
    with _opened(repo_url, password_file, load_index=False) as repository:  # forget reads no blob
        if snapshot_ids:
            remove = [repository.find_snapshot(i) for i in snapshot_ids]
            keep: list[Any] = []
        else:
            keep, remove = select_forget(
                repository.list_snapshots(), **{k: v or 0 for k, v in policy.items()}, tags=_parse_tags(tags)
            )
        repository.forget([s.id for s in remove])
    _emit(
        as_json,
        {"removed": [s.id for s in remove], "kept": [s.id for s in keep]},
        [f"removed {s.id}" for s in remove] + [f"{len(remove)} snapshot(s) removed, {len(keep)} kept by the policy"],
    )


@cli.command()
@_repository_options
@click.option(
    "--max-unused",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Leave partly used packs alone while their unused data is at most this percentage of the used data "
    "(0: repack every partly used pack).",
)
def prune(repo_url: str | None, password_file: str | None, as_json: bool, max_unused: float) -> None:
    """Delete data no snapshot references any more (takes an exclusive lock)."""
    from jobs.engine.api import PRUNE_UPLOAD_PARALLEL
    from jobs.repository.maintenance import prune as prune_repository

    with _opened(repo_url, password_file, upload_parallel=PRUNE_UPLOAD_PARALLEL) as repository:
        stats = _as_dict(prune_repository(repository, max_unused=max_unused / 100))
    _emit(as_json, stats, ["prune done"] + [f"  {k}: {v}" for k, v in sorted(stats.items())])


@cli.command()
@_repository_options
@click.option("--cluster", is_flag=True, help="Also check the launcher's RBAC and the VolumeSnapshotClasses.")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="kubeconfig for --cluster (default: in-cluster).")
@click.option("--namespace", default="snapmover", show_default=True, help="The launcher's namespace (--cluster).")
def doctor(
    repo_url: str | None,
    password_file: str | None,
    as_json: bool,
    cluster: bool,
    kubeconfig: str | None,
    namespace: str,
) -> None:
    """Pre-flight check of a storage location (-r) and, with --cluster, of the cluster.

    Storage: access, a probe object written/read/deleted, the repository password. Cluster: every
    permission the launcher uses (SelfSubjectAccessReview: run it as the launcher's
    ServiceAccount) and a VolumeSnapshotClass per CSI driver. One line per check with its fix;
    exits 1 when any check fails."""
    from jobs.doctor import CheckResult, storage_checks

    if not repo_url and not cluster:
        raise UsageError(f"nothing to check: give -r/--repo (or {ENV_REPOSITORY}) and/or --cluster")
    results: list[CheckResult] = []
    if repo_url:
        results += storage_checks(repo_url, password_file)
    if cluster:
        from jobs.kube.preflight import cluster_checks

        results += cluster_checks(kubeconfig, namespace)
    _emit(
        as_json,
        {"ok": all(r.ok for r in results), "checks": [_as_dict(r) for r in results]},
        [r.line() for r in results],
    )
    if not all(r.ok for r in results):
        sys.exit(ExitCode.FAILED)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in cli.commands:
            cli.add_command(ep.load(), ep.name)


MALLOC_ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # glibc's mallopt parameter number


def _limit_malloc_arenas() -> None:
    """Two glibc malloc arenas instead of up to 8 per core, before any thread starts.

    Every pipeline thread would otherwise get an arena of its own, each keeping freed
    chunk-sized memory: measured here, 20-30 MiB less peak RSS for a backup, no throughput
    change. Elsewhere (another libc) this does nothing; ``MALLOC_ARENA_MAX`` in the environment
    wins over it."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning errors into one line and an exit code."""
    _limit_malloc_arenas()
    _load_plugins()
    add_epilogs(cli)
    try:
        cli.main(args=argv, prog_name="snapmover", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("snapmover: aborted", err=True)
        sys.exit(ExitCode.CANCELED)
    except click.ClickException as e:
        e.show()
        sys.exit(ExitCode.USAGE)
    except MoverError as e:
        click.echo(f"snapmover: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("snapmover: interrupted", err=True)
        sys.exit(ExitCode.CANCELED)
    sys.exit(ExitCode.OK)
