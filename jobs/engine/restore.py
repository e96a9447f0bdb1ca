"""The restore pipelines: a snapshot's trees and blobs back onto a directory or a raw volume.

Called by :func:`jobs.engine.api.restore`. Filesystem restore reads the trees level by level
(``RESTORE_BATCH_DIRS`` directories' tree blobs per bulk ``load_blobs`` call) and runs steps 1-3
per batch of ``RESTORE_BATCH_FILES`` files, so its memory is one batch's plan whatever the
snapshot's file count; step 4's directories come once at the end:

1. **Plan**: create directories, symlinks, FIFOs, device nodes and the files that
   hold no data or are large; other files with data are created at their first write. Each
   chunk id is mapped to every place it goes (a chunk shared by many files is downloaded once).
2. **Data**: the batch's chunk ids, in file order, go to one bulk ``load_blobs`` (ranged, coalesced reads
   in N threads; every blob verified against its keyed hash before it is handed out) and each
   blob is ``pwrite``n to all its places by ``WRITERS`` writer threads (each owns a shard of
   the files). Only verified bytes ever reach the target; an
   :class:`~jobs.errors.IntegrityError` stops everything. Files are sized with ``ftruncate``
   so zero runs are holes. Files of ``DIRECT_FILE_BYTES`` and more are written by both writers
   (alternating ``DIRECT_SHARD_BYTES`` ranges) and get the whole pages of each write through a
   second ``O_DIRECT`` descriptor, queued to a thread per writer while a bounce buffer is free
   and through the page cache otherwise (:class:`jobs.direct_io.DirectFiles`).
3. **Hardlinks**: the other names of a multiply linked inode become links to the first name
   (created in its batch or an earlier one; only multiply linked files are remembered).
4. **Metadata**: owners, xattrs, modes and times of the batch's files; at the end those of the
   directories deepest first (after all their contents),
   and finally of the target directory itself (the snapshot's root). Files in new directories
   are created with their final mode, and skip the chown when a probe shows new files get the
   node's owner anyway (:class:`jobs.volume.metadata.CreationRules`).

Zero runs stay holes unless ``write_sparse`` is off, in which case zeros are written. Block
restore maps the single ``block`` node's chunks onto the target volume the same way. A partial
restore (``download --include/--exclude``) skips the entries its selection does not take while
planning (:class:`_Subset`); the rest of the pipeline is the same.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from jobs.direct_io import DIRECT_FILE_BYTES, DirectFiles, write_at
from jobs.engine.backup import load_trees
from jobs.engine.pipeline import Abort, Stage
from jobs.engine.progress import ProgressTracker
from jobs.errors import IntegrityError, UsageError, VolumeIOError
from jobs.repository.packs import BlobData
from jobs.repository.tree import (
    NODE_BLOCK_VOLUME,
    NODE_BLOCKDEV,
    NODE_CHARDEV,
    NODE_DIR,
    NODE_FILE,
    Node,
    decode_tree,
)
from jobs.volume.block import BlockTarget
from jobs.volume.metadata import CreationRules, apply_metadata
from jobs.volume.patterns import SKIP, WALK, Selection
from jobs.volume.target import (
    create_dir,
    create_file,
    create_file_for_write,
    create_hardlink,
    create_special,
    open_for_write,
)
from jobs.volume.target import write_zeros as write_zero_range

log = logging.getLogger(__name__)

MiB: Final = 1024 * 1024
OPEN_FILES: Final = 64  # write descriptors kept open per writer (a file's chunks arrive close together)
WRITERS: Final = 2
DIRECT_SHARD_BYTES: Final = 4 * MiB  # a large file's (O_DIRECT-written) writes alternate between writers per range
SMALL_FILE_BYTES: Final = 1 * MiB  # files below this are sharded by directory
ZERO_PIECE_BYTES: Final = 64 * MiB
# Small files travel 512 to a batch: a writer's queue then holds ~1,500 files (a directory's worth
# or more, well under the byte bound below), so the dispatch runs ahead into the next directory,
# which goes to the other writer, instead of waiting on one writer while the other idles.
WRITE_BATCH_ITEMS: Final = 512
WRITE_BATCH_BYTES: Final = 4 * MiB
WRITE_QUEUE_BATCHES: Final = 2  # per writer: at most ~2 x (4 MiB + one 8 MiB chunk) queued
# A restore plans, writes and finishes this many files at a time, so its memory does not grow
# with the snapshot's file count (a chunk shared across batches is read once per batch).
RESTORE_BATCH_FILES: Final = 16_384
RESTORE_BATCH_DIRS: Final = 64  # directories whose trees are read in one bulk load
_DEVICE_TYPES: Final = frozenset({NODE_CHARDEV, NODE_BLOCKDEV})


class RestoreRepository(Protocol):
    """What the restore pipeline needs from :class:`jobs.repository.repository.Repository`."""

    def load_blob(self, chunk_id: str) -> BlobData: ...

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]: ...


@dataclass(frozen=True)
class RestoreStats:
    """What a restore wrote."""

    files: int
    total_bytes: int


@dataclass
class _Plan:
    """Where every chunk goes: ``places[cid]`` lists ``(path, offset)``; ``order`` is first-use order."""

    places: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    zero_runs: list[tuple[str, int, int]] = field(default_factory=list)
    # Files created at their first write (one open instead of two): path -> (truncate to, fresh, mode)
    deferred: dict[str, tuple[int, bool, int]] = field(default_factory=dict)
    # Files created at their first write: path -> the key of the one writer that writes them
    # (small files: their directory's, see shard_filesystem)
    shard_keys: dict[str, int] = field(default_factory=dict)
    # Small files' directories, numbered in the order they come up: consecutive directories go
    # to different writers (see shard_filesystem)
    dir_keys: dict[str, int] = field(default_factory=dict)
    # Large files: created at full size, the whole pages of each write go with O_DIRECT
    direct: set[str] = field(default_factory=set)

    def shard_filesystem(self, path: str, offset: int) -> int:
        """Small files by directory, large files by offset range, the others by path.

        Creating a file holds its directory's lock while the filesystem allocates an inode; one
        writer per directory means the other writer never spins on that lock but creates files
        in another directory meanwhile; directories are numbered as they come up, so the next
        directory's files go to the other writer while this one's are written. A large file's
        chunks arrive one after another: sent to one writer they filled its queue and stalled
        the dispatch while the other writer idled, so its ranges alternate between writers (it
        is created before the data phase), as do the zero runs of files without data."""
        key = self.shard_keys.get(path)
        return hash(path) + offset // DIRECT_SHARD_BYTES if key is None else key

    def dir_key(self, dir_path: str) -> int:
        """The shard key of small files in ``dir_path``: directories numbered as they come."""
        key = self.dir_keys.get(dir_path)
        if key is None:
            key = self.dir_keys[dir_path] = len(self.dir_keys)
        return key

    def add_content(self, path: str, node: Node) -> None:
        offset = 0
        for cid, length in node.content:
            if cid is None:
                self.zero_runs.append((path, offset, length))
            else:
                if cid not in self.places:
                    self.places[cid] = []
                    self.lengths[cid] = length
                    self.order.append(cid)
                self.places[cid].append((path, offset))
            offset += length


class _Write(NamedTuple):
    """One unit of work for a writer: a blob for some places, or a zero run to fill (a tuple:
    one is made per blob by the dispatching thread, whose Python time every thread waits on)."""

    places: list[tuple[str, int]]
    data: BlobData = b""
    zero_length: int = 0  # > 0: fill [offset, offset + zero_length) of the single place with zeros


class _FileWriter:
    """Writes blobs and zero runs into the files of one shard, keeping a few descriptors open.

    Every path belongs to exactly one writer (or, for a block volume, every offset range), so a
    deferred file is created exactly once and without locks.
    """

    def __init__(
        self,
        plan: _Plan,
        progress: ProgressTracker,
        open_fd: Callable[[str], int],
        close_fd: Callable[[int], None],
        zero_fill: Callable[[int, str, int, int], None] | None,
        write_data: Callable[[int, str, BlobData, int], None],
    ) -> None:
        self._plan = plan
        self._progress = progress
        self._open_fd = open_fd
        self._close_fd = close_fd
        self._zero_fill = zero_fill
        self._write_data = write_data
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._direct = DirectFiles()  # plan.direct files' O_DIRECT descriptors and queued writes

    def write_batch(self, items: list[_Write]) -> None:
        for item in items:
            self.write(item)

    def write(self, item: _Write) -> None:
        if item.zero_length:
            ((path, offset),) = item.places
            if self._zero_fill is not None:
                self._zero_fill(self._fd(path), path, offset, item.zero_length)
            self._progress.add(bytes_done=item.zero_length)
            return
        for path, offset in item.places:
            fd = self._fd(path)
            if path in self._plan.direct:
                self._direct.write(fd, path, item.data, offset)
            else:
                self._write_data(fd, path, item.data, offset)
        self._progress.add(bytes_done=len(item.data) * len(item.places))

    def close(self) -> None:
        """Wait for the queued O_DIRECT writes, close every descriptor; raises a write's error."""
        try:
            self._direct.close()
        finally:
            for path in list(self._fds):
                self._forget(path)

    def _forget(self, path: str) -> None:
        if path in self._plan.direct:
            self._direct.forget(path)  # waits for its queued writes: they use both descriptors
        self._close_fd(self._fds.pop(path))

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        if len(self._fds) >= OPEN_FILES:
            self._forget(next(iter(self._fds)))
        self._fds[path] = fd = self._open_or_create(path)
        if path in self._plan.direct:
            self._direct.open(path)
        return fd

    def _open_or_create(self, path: str) -> int:
        deferred = self._plan.deferred.pop(path, None)
        if deferred is None:
            return self._open_fd(path)
        size, fresh, mode = deferred
        return create_file_for_write(path, size, fresh=fresh, mode=mode)


def _write_file(fd: int, path: str, data: BlobData, offset: int) -> None:
    write_at(fd, data, offset, path=path)


def shard_by_offset(_path: str, offset: int) -> int:
    """Block restore: neighbouring 8 MiB ranges of the one volume go to different writers."""
    return offset // (8 * MiB)


class _DataWriter:
    """Streams every planned chunk from the repository and writes it to all its places.

    The repository's ``load_blobs`` does the parallel reading (ranged reads merged per pack,
    decryption, decompression and verification in ``parallel`` threads, a bounded number in
    flight). Writes go to ``WRITERS`` threads, each owning a shard of the places (by file, or by
    offset range of a block volume): ``pwrite``s and the creation of many small files (kernel work:
    inode allocation) then run in parallel while the GIL is free.
    """

    def __init__(
        self,
        repo: RestoreRepository,
        plan: _Plan,
        *,
        parallel: int,
        progress: ProgressTracker,
        abort: Abort,
        zero_fill: Callable[[int, str, int, int], None] | None,
        shard: Callable[[str, int], int],
        open_fd: Callable[[str], int] = open_for_write,
        close_fd: Callable[[int], None] = os.close,
        write_data: Callable[[int, str, BlobData, int], None] = _write_file,
    ) -> None:
        self._repo = repo
        self._plan = plan
        self._parallel = max(1, parallel)
        self._progress = progress
        self._abort = abort
        self._shard = shard
        self._writers = [
            _FileWriter(plan, progress, open_fd, close_fd, zero_fill, write_data)
            for _ in range(min(WRITERS, self._parallel))
        ]

    def run(self) -> None:
        """Write every planned chunk, then every zero run (holes are left alone without ``zero_fill``)."""
        stages = [Stage("write", 1, w.write_batch, self._abort, depth=WRITE_QUEUE_BATCHES) for w in self._writers]
        batches = _WriteBatches(stages)

        def close() -> None:
            for stage in stages:
                stage.close()
            self._close_writers()

        with self._abort.guarded(close):
            self._send_blobs(batches)
            self._send_zero_runs(batches)
            batches.send_rest()

    def _send_blobs(self, batches: _WriteBatches) -> None:
        """Each planned blob, as it is loaded, to the writers of its places."""
        places_of, lengths, shard_of, writers = self._plan.places, self._plan.lengths, self._shard, batches.writers
        for cid, data in self._repo.load_blobs(self._plan.order, parallel=self._parallel):
            if self._abort.is_set:
                break
            if len(data) != lengths[cid]:
                raise IntegrityError(f"blob {cid} has {len(data)} bytes, the tree says {lengths[cid]}")
            places = places_of[cid]
            if len(places) == 1:  # most blobs: no grouping by writer needed
                batches.put(shard_of(*places[0]) % writers, _Write(places, data))
                continue
            shards: dict[int, list[tuple[str, int]]] = {}
            for path, offset in places:
                shards.setdefault(shard_of(path, offset) % writers, []).append((path, offset))
            for shard, grouped in shards.items():
                batches.put(shard, _Write(grouped, data))

    def _send_zero_runs(self, batches: _WriteBatches) -> None:
        """Every zero run, in pieces spread over the writers."""
        for path, offset, length in self._plan.zero_runs:
            for start in range(offset, offset + length, ZERO_PIECE_BYTES):
                piece = min(ZERO_PIECE_BYTES, offset + length - start)
                batches.put(self._shard(path, start) % batches.writers, _Write([(path, start)], zero_length=piece))

    def _close_writers(self) -> None:
        for w in self._writers:
            try:
                w.close()  # waits for its queued O_DIRECT writes: their error surfaces here
            except BaseException as e:  # noqa: BLE001 - every writer's descriptors get closed
                self._abort.fail(e)


class _WriteBatches:
    """Writes on their way to the writer stages: small blobs travel in batches, one queue
    hand-over per batch, not per small file."""

    def __init__(self, stages: list[Stage[list[_Write]]]) -> None:
        self._stages = stages
        self.writers = len(stages)
        self._batches: list[list[_Write]] = [[] for _ in stages]
        self._bytes = [0] * len(stages)

    def put(self, shard: int, item: _Write) -> None:
        """Add ``item`` to writer ``shard``'s batch; a full batch goes to that writer."""
        self._batches[shard].append(item)
        self._bytes[shard] += len(item.data) + item.zero_length
        if len(self._batches[shard]) >= WRITE_BATCH_ITEMS or self._bytes[shard] >= WRITE_BATCH_BYTES:
            self._stages[shard].put(self._batches[shard])
            self._batches[shard], self._bytes[shard] = [], 0

    def send_rest(self) -> None:
        """Send every partly filled batch."""
        for stage, batch in zip(self._stages, self._batches, strict=True):
            if batch:
                stage.put(batch)


def _zero_fill_file(fd: int, path: str, offset: int, length: int) -> None:
    write_zero_range(fd, offset, length, path=path)


def load_root(repo: RestoreRepository, root_id: str, node_type: str) -> Node:
    """The single node of a snapshot's root tree; UsageError if the snapshot is of another mode."""
    nodes = decode_tree(repo.load_blob(root_id))
    if len(nodes) != 1:
        raise IntegrityError(f"root tree {root_id} has {len(nodes)} entries, expected 1")
    if nodes[0].type != node_type:
        kind = "block" if nodes[0].type == NODE_BLOCK_VOLUME else "filesystem"
        raise UsageError(f"the snapshot is a {kind} snapshot: restore it with --mode {kind}")
    return nodes[0]


def restore_filesystem(
    repo: RestoreRepository,
    root_id: str,
    target: str,
    *,
    parallel: int,
    write_sparse: bool,
    progress: ProgressTracker,
    abort: Abort,
    selection: Selection | None = None,
) -> RestoreStats:
    """Restore a filesystem snapshot's tree into the directory ``target`` (created if missing).

    With a ``selection`` only the entries it takes are restored, with the directories leading to
    them (:class:`_Subset`)."""
    root = load_root(repo, root_id, NODE_DIR)
    target, target_is_new = _prepare_target(target)
    subset = _Subset(selection, target) if selection else None
    restore = _FilesystemRestore(
        repo,
        CreationRules.probe(target),
        parallel=parallel,
        write_sparse=write_sparse,
        progress=progress,
        abort=abort,
        subset=subset,
    )
    restore.dirs.append((target, root))
    level = [(target, root, target_is_new)]  # (path, node, the directory was empty when we started)
    while level:
        level = restore.restore_level(level)
    restore.finish_batch()
    for path, node in reversed(restore.dirs):  # breadth-first order reversed: deepest first, the root last
        if subset is None or not subset.remove_if_empty(path):
            apply_metadata(path, node)
    return RestoreStats(files=restore.files, total_bytes=progress.total_bytes)


def _prepare_target(target: str) -> tuple[str, bool]:
    """The target directory's real path, created if missing; and whether it is new."""
    target = os.path.realpath(target)  # a symlink naming the target is followed once
    if os.path.lexists(target) and not os.path.isdir(target):
        raise VolumeIOError(f"{target}: restore target exists and is not a directory")
    target_is_new = not os.path.lexists(target)
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise VolumeIOError(f"{target}: cannot create restore target: {e.strerror}") from e
    return target, target_is_new


class _FilesystemRestore:
    """One filesystem restore, level by level of the tree: directories and special entries are
    created as they come up, files are planned into a :class:`_Batch` that is written and finished
    whenever it is full (:meth:`finish_batch`)."""

    def __init__(
        self,
        repo: RestoreRepository,
        rules: CreationRules,
        *,
        parallel: int,
        write_sparse: bool,
        progress: ProgressTracker,
        abort: Abort,
        subset: _Subset | None = None,
    ) -> None:
        self._repo = repo
        self._rules = rules
        self._subset = subset
        self._parallel = parallel
        self._write_sparse = write_sparse
        self._progress = progress
        self._abort = abort
        self.dirs: list[tuple[str, Node]] = []  # every directory, in breadth-first order
        self._first_names: dict[tuple[int, int], str] = {}  # grows only for multiply linked files
        self._batch = _Batch()
        self.files = 0

    def restore_level(self, level: list[tuple[str, Node, bool]]) -> list[tuple[str, Node, bool]]:
        """Create or plan the entries of ``level``'s directories; returns their subdirectories."""
        next_level: list[tuple[str, Node, bool]] = []
        for start in range(0, len(level), RESTORE_BATCH_DIRS):
            group = level[start : start + RESTORE_BATCH_DIRS]
            trees = load_trees(self._repo, [n.subtree for _, n, _ in group if n.subtree is not None], self._parallel)
            for dir_path, dir_node, fresh in group:
                self._abort.check()
                for node in trees.get(dir_node.subtree or "", []):
                    self._add_entry(dir_path, node, fresh, next_level)
            del trees
        return next_level

    def _add_entry(self, dir_path: str, node: Node, fresh: bool, next_level: list[tuple[str, Node, bool]]) -> None:
        path = os.path.join(dir_path, node.name)
        if self._subset is not None and not self._subset.wants(dir_path, path, node):
            return
        if node.type == NODE_DIR:
            next_level.append((path, node, create_dir(path, fresh=fresh)))
            self.dirs.append((path, node))
        elif node.type == NODE_FILE:
            _plan_file(self._batch, path, node, dir_path, self._first_names, fresh=fresh, rules=self._rules)
            if self._batch.files >= RESTORE_BATCH_FILES:
                self.finish_batch()
        elif _create_special(path, node, fresh=fresh):
            self._batch.others.append((path, node, False))

    def finish_batch(self) -> None:
        """Write the batch's data, link its other names and set its files' metadata; start a new one."""
        batch, self._batch = self._batch, _Batch()
        progress = self._progress
        progress.add(total_bytes=batch.total_bytes, files_total=batch.files)
        _DataWriter(
            self._repo,
            batch.plan,
            parallel=self._parallel,
            progress=progress,
            abort=self._abort,
            zero_fill=None if self._write_sparse else _zero_fill_file,
            shard=batch.plan.shard_filesystem,
        ).run()
        for existing, path in batch.links:
            create_hardlink(existing, path)
        files_done = 0
        for path, node, preset in batch.others:
            apply_metadata(path, node, preset=preset)
            if node.type == NODE_FILE:
                files_done += 1
                if files_done % 256 == 0:
                    progress.add(files_done=256)
        progress.add(files_done=files_done % 256)
        self.files += batch.files + len(batch.links)


class _Subset:
    """A partial restore's choices: which entries to restore, and which directories were only
    walked through (looking for included entries) and are removed again if they stay empty."""

    def __init__(self, selection: Selection, target: str) -> None:
        self._selection = selection
        self._prefix = len(target.rstrip("/")) + 1
        self._walked: set[str] = {target} if selection.includes else set()
        self._created: set[str] = set()

    def wants(self, dir_path: str, path: str, node: Node) -> bool:
        """Whether to restore ``node`` (a directory may be restored only to walk into it)."""
        choice = self._selection.decide(
            path[self._prefix :], node.type == NODE_DIR, inside_included=dir_path not in self._walked
        )
        if choice == WALK:
            self._walked.add(path)
            if not os.path.lexists(path):  # only a directory this restore creates may be removed again
                self._created.add(path)
        return choice != SKIP

    def remove_if_empty(self, path: str) -> bool:
        """Remove a walked-through directory this restore created that holds nothing; True when removed."""
        if path not in self._created:
            return False
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise VolumeIOError(f"{path}: cannot remove an empty directory: {e.strerror}") from e
        return True


@dataclass
class _Batch:
    """Files planned, written and finished together (a restore's memory is one batch's plan)."""

    plan: _Plan = field(default_factory=_Plan)
    others: list[tuple[str, Node, bool]] = field(default_factory=list)  # (path, node, created with mode and owner)
    links: list[tuple[str, str]] = field(default_factory=list)  # (first name, other name)
    files: int = 0
    total_bytes: int = 0


def _plan_file(
    batch: _Batch,
    path: str,
    node: Node,
    dir_path: str,
    first_names: dict[tuple[int, int], str],
    *,
    fresh: bool,
    rules: CreationRules,
) -> None:
    """Add one regular file to the batch: its data to the plan, or a link to its first name."""
    key = (node.dev, node.inode)
    if node.nlink > 1 and key in first_names:
        batch.links.append((first_names[key], path))  # the first name is in this batch or an earlier one
        return
    if node.nlink > 1:
        first_names[key] = path
    plan = batch.plan
    ends_in_hole = not node.content or node.content[-1][0] is None
    direct = node.size >= DIRECT_FILE_BYTES  # O_DIRECT writes stay within the file's size
    size = node.size if ends_in_hole or direct else 0  # else the last data write sets it
    preset = fresh and rules.preset(node)
    mode = node.mode if preset else 0o600
    has_data = any(cid is not None for cid, _ in node.content)
    if has_data and not direct:
        plan.deferred[path] = (size, fresh, mode)
        plan.shard_keys[path] = plan.dir_key(dir_path) if node.size < SMALL_FILE_BYTES else hash(path)
    else:  # no data, or written by both writers: it must exist before either starts
        create_file(path, size, fresh=fresh, mode=mode)
        if has_data:
            plan.direct.add(path)
    plan.add_content(path, node)
    batch.files += 1
    batch.total_bytes += node.size
    batch.others.append((path, node, preset))


def _create_special(path: str, node: Node, *, fresh: bool) -> bool:
    """Create a non-regular, non-directory entry; False when it was skipped (devices as non-root)."""
    try:
        create_special(path, node.type, target=node.target, rdev=node.rdev, fresh=fresh)
    except VolumeIOError as e:
        cause = e.__cause__
        if node.type in _DEVICE_TYPES and isinstance(cause, OSError) and cause.errno == errno.EPERM:
            log.warning("%s: device node not restored (needs root)", path)
            return False
        raise
    return True


def restore_block(
    repo: RestoreRepository,
    root_id: str,
    target: str,
    *,
    parallel: int,
    write_sparse: bool,
    progress: ProgressTracker,
    abort: Abort,
) -> RestoreStats:
    """Restore a block snapshot onto ``target`` (an image file, created if missing, or a device)."""
    node = load_root(repo, root_id, NODE_BLOCK_VOLUME)
    volume = BlockTarget(target, node.size, write_sparse=write_sparse)
    progress.add(total_bytes=node.size, files_total=1)
    plan = _Plan()
    plan.add_content(target, node)

    def zero_fill(_fd: int, _path: str, offset: int, length: int) -> None:
        volume.zero_range(offset, length)

    try:
        _DataWriter(
            repo,
            plan,
            parallel=parallel,
            progress=progress,
            abort=abort,
            zero_fill=zero_fill if volume.needs_zeroing else None,
            shard=shard_by_offset,
            open_fd=lambda _p: volume.fd,
            close_fd=lambda _fd: None,
            write_data=lambda _fd, _path, data, offset: volume.write(data, offset),
        ).run()
    finally:
        volume.close()
    progress.add(files_done=1)
    return RestoreStats(files=1, total_bytes=node.size)
