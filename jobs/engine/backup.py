"""The backup pipelines: a filesystem tree or a raw block volume into repository blobs.

Called by :func:`jobs.engine.api.backup`, which selects the parent snapshot, takes the lock and
writes the manifest; this module produces the root tree blob.

Filesystem pipeline (one bounded multithreaded pipeline)::

    walker (caller's thread) --large files--> readers (N threads) --chunks--> storers (N threads) --> add_blob
      lstat, xattrs, parent lookup            read windows, CDC cut          zero check, keyed hash,
                              --small batches--> small lane (1 thread):      dedup, compress, encrypt, pack
                                                 read + cut + store

* The walker lists directories depth first. Unchanged files (same size, mtime, ctime and inode
  as in the parent snapshot) take the parent's chunk list and are not read at all; a directory
  whose entries all equal the parent's listing reuses the parent's tree id without re-encoding.
* Files up to ``SMALL_FILE_BYTES`` travel in batches to ONE lane thread that reads, hashes and
  stores them itself: per small file the work is tiny and mostly holds the GIL, and measurements
  here showed 2 threads on tiny files are slower than 1 (GIL ping-pong). Both queues are deep
  (they carry paths, not data), so the walker runs ahead and large files found after a big
  directory of small ones are processed at the same time as it.
* Larger files are read in windows of ``WINDOW_BYTES``; holes (SEEK_HOLE) are never read; the
  cut chunks of one window are spread over the storers, so one huge file uses every core.
* Bytes between reading and storing live in a fixed :class:`BufferPool` of windows (sized from
  the memory budget); the repository's bounded pack upload pool holds the rest.
* A directory's tree blob is written as soon as its last entry is complete, so memory holds only
  the directories still in progress.

Block pipeline: fixed ``block_size`` blocks read with ``pread`` by N threads; all-zero blocks (and
holes of an image file) become unstored zero runs.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from jobs.engine.pipeline import Abort, BufferPool, CdcConfig, Chunker, SharedBuffer, Stage, Stopped
from jobs.engine.progress import ProgressTracker
from jobs.errors import MoverError, VolumeIOError
from jobs.repository.packs import BlobData
from jobs.repository.tree import (
    NODE_BLOCK_VOLUME,
    NODE_DIR,
    NODE_FILE,
    ContentRef,
    Node,
    decode_tree,
    encode_tree,
)
from jobs.volume.block import BlockSource
from jobs.volume.metadata import capture_metadata, file_xattrs
from jobs.volume.patterns import PathFilter
from jobs.volume.source import data_extents, is_zero, list_dir, open_for_read, read_at

MiB: Final = 1024 * 1024
SMALL_FILE_BYTES: Final = 1 * MiB
SMALL_BATCH_FILES: Final = 128
SMALL_BATCH_BYTES: Final = 8 * MiB
WINDOW_BYTES: Final = 8 * MiB
QUEUED_LARGE_FILES: Final = 1024
CANCEL_CHECK_ENTRIES: Final = 1024
PARENT_TREES_AHEAD: Final = 32  # directories whose parent-snapshot trees are loaded in one bulk read
QUEUED_SMALL_BATCHES: Final = 256
STORE_TASK_BYTES: Final = 4 * MiB
BLOCK_TASK_BYTES: Final = 8 * MiB
ROOT_NAME: Final = "."  # the one entry of a filesystem snapshot's root tree: the source directory


class BackupRepository(Protocol):
    """What the backup pipeline needs from :class:`jobs.repository.repository.Repository`."""

    @property
    def config(self) -> RepoConfig: ...

    def chunk_id(self, data: bytes | memoryview) -> str: ...

    def has_blob(self, chunk_id: str) -> bool: ...

    def add_blob(self, kind: str, chunk_id: str, data: bytes | memoryview) -> int: ...

    def load_blob(self, chunk_id: str) -> BlobData: ...

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]: ...


class RepoConfig(CdcConfig, Protocol):
    """Repository config fields used here."""

    @property
    def block_size(self) -> int: ...


@dataclass
class TreeStats:
    """What a backup pipeline produced."""

    root: str = ""
    files: int = 0
    dirs: int = 0
    stored_bytes: int = 0


def node_from_stat(name: str, path: str, st: os.stat_result, *, xattrs: bool = True) -> Node:
    """The tree node of one walked entry (content/subtree still empty; with ``xattrs=False`` a
    regular file's xattrs too, for the walker to fill in later)."""
    return Node(**capture_metadata(name, path, st, file_xattrs=xattrs))


def coalesce(refs: Iterable[ContentRef]) -> list[ContentRef]:
    """Merge neighbouring zero runs ``(None, a), (None, b)`` into ``(None, a + b)``."""
    out: list[ContentRef] = []
    for cid, length in refs:
        if cid is None and out and out[-1][0] is None:
            out[-1] = (None, out[-1][1] + length)
        elif length:
            out.append((cid, length))
    return out


def file_content(slots: list[ContentRef | None]) -> list[ContentRef]:
    """A file's content from its stored pieces in order; a one-piece file (most files) skips
    the merge pass."""
    if len(slots) == 1:
        ref = slots[0]
        if ref is not None and ref[0] is not None:
            return [ref]
    return coalesce(ref for ref in slots if ref is not None)


def store_tree(repo: BackupRepository, nodes: list[Node]) -> tuple[str, int]:
    """Encode and store one tree blob; returns its chunk id and the bytes it added."""
    data = encode_tree(nodes)
    cid = repo.chunk_id(data)
    return cid, repo.add_blob("tree", cid, data)


class BlobLoader(Protocol):
    """Bulk blob reading (the part of the Repository that tree loading needs)."""

    def load_blobs(self, chunk_ids: Iterable[str], *, parallel: int = 4) -> Iterator[tuple[str, BlobData]]: ...


def load_trees(repo: BlobLoader, tree_ids: Iterable[str], parallel: int) -> dict[str, list[Node]]:
    """Several stored trees in one bulk read, by tree id."""
    unique = list(dict.fromkeys(tree_ids))
    if not unique:
        return {}
    return {cid: decode_tree(data) for cid, data in repo.load_blobs(unique, parallel=max(2, parallel))}


def load_entries(repo: BackupRepository, tree_id: str | None) -> dict[str, Node]:
    """The entries of a stored tree by name (empty for None)."""
    if tree_id is None:
        return {}
    return {n.name: n for n in decode_tree(repo.load_blob(tree_id))}


# --- filesystem ---------------------------------------------------------------------------------


def old_subtree(d: _Dir, name: str) -> str | None:
    """The tree id of subdirectory ``name`` of ``d`` in the parent snapshot (None: not there)."""
    old = d.parent_entries.get(name) if d.parent_entries else None
    return old.subtree if old is not None and old.type == NODE_DIR else None


@dataclass(eq=False)
class _Dir:
    node: Node
    parent: _Dir | None
    parent_entries: dict[str, Node] | None  # its listing in the parent snapshot (None: not loaded yet)
    old_tree: str | None = None  # and that listing's tree id
    entries: list[Node] = field(default_factory=list)
    pending: int = 1  # +1 per incomplete child; the initial 1 is the walker's own hold


@dataclass(eq=False)
class _File:
    path: str
    size: int
    slots: list[ContentRef | None] = field(default_factory=list)
    outstanding: int = 1  # store tasks in flight + 1 while the reader still produces
    waiters: list[tuple[Node, _Dir]] = field(default_factory=list)
    content: list[ContentRef] | None = None
    # Set by whoever reads the file (its reader, on the open descriptor) or by the walker
    # (unchanged or empty files); every name of the file gets them with its content.
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass
class _StoreTask:
    pieces: list[tuple[_File, int, memoryview]]
    window: SharedBuffer | None = None  # the pooled window the pieces point into


def source_root(repo: BackupRepository, source: str, parent_root: str | None) -> tuple[str, Node, str | None]:
    """The source directory (symlinks resolved), its root node, and the tree id of its listing
    in the parent snapshot (None without one); VolumeIOError when it is no readable directory."""
    source = os.path.realpath(source)  # a symlink naming the source is followed once
    try:
        st = os.lstat(source)
    except OSError as e:
        raise VolumeIOError(f"{source}: cannot read source: {e.strerror}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise VolumeIOError(f"{source}: source is not a directory (use --mode block for volumes)")
    old = load_entries(repo, parent_root).get(ROOT_NAME)
    return source, node_from_stat(ROOT_NAME, source, st), old.subtree if old is not None else None


class FilesystemBackup:
    """One run of the filesystem pipeline over ``source``; use :meth:`run` once."""

    def __init__(
        self,
        repo: BackupRepository,
        source: str,
        *,
        parallel: int,
        memory_budget_bytes: int,
        progress: ProgressTracker,
        abort: Abort,
        parent_root: str | None,
        excludes: PathFilter | None = None,
    ) -> None:
        self._repo = repo
        self._excludes = excludes or PathFilter()
        self._source = source
        self._progress = progress
        self._abort = abort
        self._parent_root = parent_root
        self._chunker = Chunker(repo.config)
        self._window = max(WINDOW_BYTES, self._chunker.max_bytes)
        buffer_bytes = self._window + self._chunker.max_bytes  # a window plus the carried tail
        windows = (memory_budget_bytes - SMALL_BATCH_BYTES) // buffer_bytes  # small batches use the rest
        self._pool = BufferPool(buffer_bytes, windows, abort)
        self._lock = threading.Lock()
        self._links: dict[tuple[int, int], _File] = {}
        self._small: list[_File] = []
        self._small_bytes = 0
        self._walked = [0, 0, 0, 0]  # total_bytes, files_total, bytes_done, files_done not yet reported
        self._stats = TreeStats()
        self._parallel = max(1, parallel)
        self._readers: Stage[_File] | None = None
        self._small_lane: Stage[list[_File]] | None = None
        self._storers: Stage[_StoreTask] | None = None

    def run(self) -> TreeStats:
        """Walk, read and store everything; returns the root tree id and counts.

        Raises VolumeIOError for an unreadable source, CanceledError on cancel, or the first
        error any stage hit.
        """
        self._source, root_node, old_root = source_root(self._repo, self._source, self._parent_root)
        root = _Dir(root_node, None, load_entries(self._repo, old_root), old_root)
        self._start_stages()
        with self._abort.guarded(self._close_stages):
            self._walk(root)
            self._flush_small()
        if root_node.subtree is None:
            raise MoverError("internal error: the backup finished with incomplete directories")
        self._stats.root, stored = store_tree(self._repo, [root_node])
        self._stats.stored_bytes += stored
        return self._stats

    def _start_stages(self, small_batches: int = QUEUED_SMALL_BATCHES) -> None:
        self._storers = Stage("store", self._parallel, self._store, self._abort)
        # Queued files carry no data (the window pool bounds that), so the queue is deep: the
        # walker keeps feeding large files to the readers while it works through small ones.
        self._readers = Stage("read", self._parallel, self._read_large, self._abort, depth=QUEUED_LARGE_FILES)
        self._small_lane = Stage("small", 1, self._read_small, self._abort, depth=small_batches)

    def _close_stages(self) -> None:
        """Let the stages finish what is queued (nothing once aborting), then stop their threads."""
        for stage in (self._small_lane, self._readers, self._storers):
            if stage is not None:
                stage.close()

    # walker (caller's thread) -------------------------------------------------------------------

    def _walk(self, root: _Dir) -> None:
        stack = [(root, self._source)]
        while stack:
            if self._abort.is_set:
                raise Stopped
            if stack[-1][0].parent_entries is None:
                self._load_parent_trees(stack)
            d, path = stack.pop()
            self._walk_dir(d, path, stack)

    def _walk_dir(self, d: _Dir, path: str, stack: list[tuple[_Dir, str]]) -> None:
        """List one directory, hand its files on and queue its subdirectories.

        Every entry is counted as pending under one lock acquisition before any is handed on,
        and the entries that are complete at once (unchanged, empty, special files) are released
        together at the end with the walker's own hold: no lock per file."""
        listing = list_dir(path, self._keep(path))
        with self._lock:
            d.pending += len(listing)
        subdirs: list[tuple[Node, str]] = []
        done = 0
        for i, (name, st) in enumerate(listing):
            if i % CANCEL_CHECK_ENTRIES == CANCEL_CHECK_ENTRIES - 1 and self._abort.is_set:
                raise Stopped  # a huge directory of unchanged files must not delay a cancel
            child_path = os.path.join(path, name)
            # a regular file's xattrs come later: from its reader (off this thread, on the
            # descriptor it opens anyway) or from the parent snapshot when unchanged
            node = node_from_stat(name, child_path, st, xattrs=False)
            d.entries.append(node)
            if node.type == NODE_DIR:
                subdirs.append((node, child_path))
            elif node.type == NODE_FILE:
                self._stats.files += 1
                done += self._add_file(d, node, child_path)
            else:
                done += 1
        done += self._push_subdirs(d, subdirs, stack)
        self._report_walked()
        self._release(d, done + 1)

    def _keep(self, path: str) -> Callable[[str, bool], bool] | None:
        """The exclude test for the entries of directory ``path`` (None: keep everything).

        Excluded entries are dropped from the listing before they are stat'ed, so an excluded
        file is never read and an excluded directory never descended into."""
        if not self._excludes:
            return None
        prefix = "" if path == self._source else path[len(self._source) + 1 :] + "/"
        excludes = self._excludes
        return lambda name, is_dir: not excludes.matches(prefix + name, is_dir)

    def _push_subdirs(self, d: _Dir, subdirs: list[tuple[Node, str]], stack: list[tuple[_Dir, str]]) -> int:
        """Queue the subdirectories (already counted pending); their parent-snapshot listings are
        loaded when they come up. Returns how many of them are complete already (none here)."""
        self._stats.dirs += len(subdirs)
        for node, path in reversed(subdirs):  # popped in name order
            old_id = old_subtree(d, node.name)
            stack.append((_Dir(node, d, None if old_id is not None else {}, old_id), path))
        return 0

    def _load_parent_trees(self, stack: list[tuple[_Dir, str]]) -> None:
        """Load the parent-snapshot listings of the next directories to walk in one bulk read.

        Only the top ``PARENT_TREES_AHEAD`` directories of the stack are loaded, so the listings
        held at once stay bounded however many subdirectories a directory has."""
        ahead = [d for d, _ in stack[-PARENT_TREES_AHEAD:] if d.parent_entries is None]
        trees = load_trees(self._repo, [d.old_tree for d in ahead if d.old_tree is not None], self._parallel)
        for d in ahead:
            d.parent_entries = {n.name: n for n in trees[d.old_tree]} if d.old_tree is not None else {}

    def _add_file(self, d: _Dir, node: Node, path: str) -> bool:
        """Hand one regular file on; True when its node is complete already (unchanged, empty,
        or another name of a file stored before)."""
        key = (node.dev, node.inode) if node.nlink > 1 else None
        walked = self._walked
        walked[1] += 1  # files_total
        if key is not None and key in self._links:
            walked[3] += 1  # files_done: another name of a file already counted
            return self._join_link(self._links[key], node, d)
        walked[0] += node.size  # total_bytes
        f = _File(path, node.size)
        if key is not None:
            self._links[key] = f
        old = self._unchanged_file(d, node)
        if old is not None or node.size == 0:
            f.content = old.content if old is not None else []
            # ctime moves with every xattr change: an unchanged ctime keeps the parent's xattrs
            f.xattrs = old.xattrs if old is not None else file_xattrs(path, path)
            f.outstanding = 0
            node.content, node.xattrs = f.content, f.xattrs
            walked[2] += node.size  # bytes_done
            walked[3] += 1
            return True
        f.waiters.append((node, d))  # no other thread knows f before it is queued below
        assert self._readers is not None
        if node.size > SMALL_FILE_BYTES:
            self._report_walked()
            self._readers.put(f)
            return False
        self._small.append(f)
        self._small_bytes += node.size
        if len(self._small) >= SMALL_BATCH_FILES or self._small_bytes >= SMALL_BATCH_BYTES:
            self._flush_small()
        return False

    def _report_walked(self) -> None:
        """Hand the walker's tallies to the progress tracker (once per directory, not per file)."""
        total_bytes, files_total, bytes_done, files_done = self._walked
        if files_total:
            self._progress.add(
                total_bytes=total_bytes, files_total=files_total, bytes_done=bytes_done, files_done=files_done
            )
            self._walked = [0, 0, 0, 0]

    def _flush_small(self) -> None:
        self._report_walked()
        if self._small:
            batch, self._small, self._small_bytes = self._small, [], 0
            assert self._small_lane is not None
            self._small_lane.put(batch)

    def _unchanged_file(self, d: _Dir, node: Node) -> Node | None:
        """The parent snapshot's node of this file when size, mtime, ctime and inode are the
        same and its data is still stored (its content and xattrs are then reused)."""
        old = (d.parent_entries or {}).get(node.name)
        if (
            old is None
            or old.type != NODE_FILE
            or (old.size, old.mtime_ns, old.ctime_ns, old.inode)
            != (node.size, node.mtime_ns, node.ctime_ns, node.inode)
            or sum(length for _, length in old.content) != node.size
        ):
            return None
        if not all(cid is None or self._repo.has_blob(cid) for cid, _ in old.content):
            return None  # the parent's data was pruned meanwhile: read the file again
        return old

    def _join_link(self, f: _File, node: Node, d: _Dir) -> bool:
        """Another name of ``f``: it gets f's content now (True) or when f completes (False)."""
        with self._lock:
            if f.content is None:
                f.waiters.append((node, d))
                return False
        node.content, node.xattrs = f.content, f.xattrs
        return True

    # completion bookkeeping (any thread) --------------------------------------------------------

    def _release(self, d: _Dir, count: int = 1) -> None:
        """``count`` entries of ``d`` are complete; store its tree (and maybe its parents') when none is left."""
        with self._lock:
            d.pending -= count
            if d.pending:
                return
        next_dir: _Dir | None = d
        while next_dir is not None:
            next_dir = self._complete(next_dir)

    def _complete(self, d: _Dir) -> _Dir | None:
        """Every entry of ``d`` is complete: store its tree; returns its parent when that is
        complete now too."""
        if self._unchanged_tree(d):
            d.node.subtree, stored = d.old_tree, 0
        else:
            d.node.subtree, stored = store_tree(self._repo, d.entries)
        d.entries, d.parent_entries = [], {}
        with self._lock:
            self._stats.stored_bytes += stored
            parent = d.parent
            if parent is None:
                return None
            parent.pending -= 1
            return None if parent.pending else parent

    def _unchanged_tree(self, d: _Dir) -> bool:
        """True when ``d`` lists exactly what its parent-snapshot tree lists (skip encoding it again)."""
        old = d.parent_entries or {}
        return (
            d.old_tree is not None
            and len(d.entries) == len(old)
            and all(node == old.get(node.name) for node in d.entries)
            and self._repo.has_blob(d.old_tree)
        )

    def _files_step(self, files: Iterable[_File]) -> None:
        """One hold on each file is released; complete the files that have none left."""
        completed: list[tuple[list[ContentRef], dict[str, str], list[tuple[Node, _Dir]]]] = []
        with self._lock:
            for f in files:
                f.outstanding -= 1
                if f.outstanding:
                    continue
                f.content = file_content(f.slots)
                completed.append((f.content, f.xattrs, f.waiters))
                f.waiters = []
        if not completed:
            return
        done_in: dict[int, tuple[_Dir, int]] = {}
        for content, xattrs, waiters in completed:
            # the file may have changed size since it was listed
            size = content[0][1] if len(content) == 1 else sum(length for _, length in content)
            for node, d in waiters:
                node.content, node.size, node.xattrs = content, size, xattrs
                done_in[id(d)] = (d, done_in.get(id(d), (d, 0))[1] + 1)
        self._progress.add(files_done=len(completed))
        for d, count in done_in.values():
            self._release(d, count)

    # readers ------------------------------------------------------------------------------------

    def _read_small(self, batch: list[_File]) -> None:
        """Read, cut and store a batch of small files in this thread (the small lane)."""
        pieces: list[tuple[_File, int, memoryview]] = []
        for f in batch:
            buf = memoryview(bytearray(f.size))
            fd = open_for_read(f.path)
            try:
                f.xattrs = file_xattrs(fd, f.path)
                n = read_at(fd, buf, 0, path=f.path)
            finally:
                os.close(fd)
            chunks, _ = self._chunker.cut(buf[:n], final=True)
            f.slots = [None] * len(chunks)
            pieces.extend((f, i, buf[off : off + length]) for i, (off, length) in enumerate(chunks))
        self._store(_StoreTask(pieces))  # completes the files: this was their only hold

    def _read_large(self, f: _File) -> None:
        fd = open_for_read(f.path)
        try:
            f.xattrs = file_xattrs(fd, f.path)
            for offset, length, is_data in data_extents(fd, f.size):
                if is_data:
                    self._read_extent(f, fd, offset, length)
                else:
                    f.slots.append((None, length))
                    self._progress.add(bytes_done=length)
        finally:
            os.close(fd)
        self._files_step([f])

    def _read_extent(self, f: _File, fd: int, offset: int, length: int) -> None:
        carry = b""
        pos, end = offset, offset + length
        while True:
            if self._abort.is_set:
                raise Stopped
            want = min(self._window, end - pos)
            window = SharedBuffer(self._pool)  # held by this reader until the chunks are handed over
            try:
                buf = window.view
                buf[: len(carry)] = carry
                n = read_at(fd, buf[len(carry) : len(carry) + want], pos, path=f.path)
                pos += n
                final = pos >= end or n < want  # a short read: the file shrank under us
                total = len(carry) + n
                chunks, consumed = self._chunker.cut(buf[:total], final=final)
                base = len(f.slots)
                f.slots.extend([None] * len(chunks))
                self._submit([(f, base + i, buf[o : o + ln]) for i, (o, ln) in enumerate(chunks)], window)
                # The tail is copied out so this reader never holds a buffer while waiting for the next.
                carry = b"" if final else bytes(buf[consumed:total])
            finally:
                window.let_go()
            if final:
                return

    def _submit(self, pieces: list[tuple[_File, int, memoryview]], window: SharedBuffer) -> None:
        """Split one window's pieces into store tasks of about STORE_TASK_BYTES each."""
        assert self._storers is not None
        tasks: list[_StoreTask] = []
        current: list[tuple[_File, int, memoryview]] = []
        current_bytes = 0
        for piece in pieces:
            current.append(piece)
            current_bytes += len(piece[2])
            if current_bytes >= STORE_TASK_BYTES:
                tasks.append(_StoreTask(current, window=window))
                current, current_bytes = [], 0
        if current:
            tasks.append(_StoreTask(current, window=window))
        for task in tasks:
            window.hold()
            with self._lock:
                for f in {id(p[0]): p[0] for p in task.pieces}.values():
                    f.outstanding += 1
        for task in tasks:
            self._storers.put(task)

    # storers ------------------------------------------------------------------------------------

    def _store(self, task: _StoreTask) -> None:
        done = new = 0
        try:
            for f, index, view in task.pieces:
                if self._abort.is_set:
                    raise Stopped
                f.slots[index], added = self._store_chunk(view)
                done += len(view)
                new += added
        finally:
            if task.window is not None:
                task.window.let_go()
        self._progress.add(bytes_done=done, new_bytes=new)
        self._files_step({id(p[0]): p[0] for p in task.pieces}.values())

    def _store_chunk(self, view: memoryview) -> tuple[ContentRef, int]:
        n = len(view)
        if is_zero(view):
            return (None, n), 0
        cid = self._repo.chunk_id(view)
        stored = self._repo.add_blob("data", cid, view)
        if not stored:
            return (cid, n), 0
        with self._lock:
            self._stats.stored_bytes += stored
        return (cid, n), n


# --- block volumes ------------------------------------------------------------------------------


def _block_tasks(source: BlockSource, block_size: int) -> Iterator[tuple[int, int, bool]]:
    """``(first block, block count, has data)`` runs; data runs hold at most BLOCK_TASK_BYTES.

    Blocks that lie entirely in a hole of an image file are never read.
    """
    count = (source.size + block_size - 1) // block_size
    has_data = bytearray(count)
    for offset, length, is_data in data_extents(source.fd, source.size):
        if is_data:
            first, last = offset // block_size, (offset + length + block_size - 1) // block_size
            has_data[first:last] = b"\x01" * (last - first)
    per_task = max(1, BLOCK_TASK_BYTES // block_size)
    i = 0
    while i < count:
        if has_data[i]:
            end = has_data.find(0, i)
            end = count if end < 0 else end
            for start in range(i, end, per_task):
                yield start, min(per_task, end - start), True
        else:
            end = has_data.find(1, i)
            end = count if end < 0 else end
            yield i, end - i, False
        i = end


def backup_block(
    repo: BackupRepository,
    source_path: str,
    *,
    parallel: int,
    progress: ProgressTracker,
    abort: Abort,
) -> TreeStats:
    """Store a raw volume as fixed blocks; returns the root tree (one ``block`` node)."""
    source = BlockSource(source_path)
    st = os.stat(source_path)
    blocks = _BlockBackup(repo, source, source_path, progress, abort)
    progress.add(total_bytes=source.size, files_total=1)
    workers: Stage[tuple[int, int, bool]] = Stage("block", parallel, blocks.handle, abort, depth=2 * parallel)

    def close() -> None:
        workers.close()
        source.close()

    with abort.guarded(close):
        for task in _block_tasks(source, blocks.block_size):
            workers.put(task)
    node = node_from_stat(os.path.basename(source_path) or "volume", source_path, st)
    node.type, node.size, node.nlink = NODE_BLOCK_VOLUME, source.size, 1
    node.content = blocks.content()
    stats = TreeStats(files=1, stored_bytes=blocks.stored_bytes)
    stats.root, stored = store_tree(repo, [node])
    stats.stored_bytes += stored
    progress.add(files_done=1)
    return stats


class _BlockBackup:
    """The blocks of one raw volume, stored by :meth:`handle` from several worker threads: each
    task is a run of blocks, all in a hole or read in one go; every block lands in its slot."""

    def __init__(
        self, repo: BackupRepository, source: BlockSource, path: str, progress: ProgressTracker, abort: Abort
    ) -> None:
        self._repo = repo
        self._source = source
        self._path = path
        self._progress = progress
        self._abort = abort
        self.block_size = repo.config.block_size
        self._slots: list[ContentRef | None] = [None] * ((source.size + self.block_size - 1) // self.block_size)
        self._lock = threading.Lock()
        self._local = threading.local()  # one read buffer per worker thread
        self.stored_bytes = 0

    def _block_len(self, index: int) -> int:
        return min(self.block_size, self._source.size - index * self.block_size)

    def handle(self, task: tuple[int, int, bool]) -> None:
        """Store the ``count`` blocks from ``first`` (a hole's blocks are only recorded)."""
        first, count, has_data = task
        length = sum(self._block_len(i) for i in range(first, first + count))
        if not has_data:
            for i in range(first, first + count):
                self._slots[i] = (None, self._block_len(i))
            self._progress.add(bytes_done=length)
            return
        buf = self._read(first, length)
        new = stored_sum = 0
        for i in range(first, first + count):
            if self._abort.is_set:
                raise Stopped
            off = (i - first) * self.block_size
            stored = self._store(i, buf[off : off + self._block_len(i)])
            if stored:
                new += self._block_len(i)
                stored_sum += stored
        with self._lock:
            self.stored_bytes += stored_sum
        self._progress.add(bytes_done=length, new_bytes=new)

    def _read(self, first: int, length: int) -> memoryview:
        """``length`` bytes from block ``first`` into this thread's reused buffer."""
        buf: memoryview | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(BLOCK_TASK_BYTES + self.block_size))
        start = first * self.block_size
        n = read_at(self._source.fd, buf[:length], start, path=self._path)
        if n != length:
            raise VolumeIOError(f"{self._path}: short read at offset {start + n}: the volume shrank")
        return buf

    def _store(self, index: int, view: memoryview) -> int:
        """Store one block unless it is all zeros; returns the bytes it added to the repository."""
        if is_zero(view):
            self._slots[index] = (None, len(view))
            return 0
        cid = self._repo.chunk_id(view)
        stored = self._repo.add_blob("data", cid, view)
        self._slots[index] = (cid, len(view))
        return stored

    def content(self) -> list[ContentRef]:
        """The volume's content list, once every task is done."""
        if any(s is None for s in self._slots):
            raise MoverError("internal error: the block backup left blocks unassigned")
        return coalesce(s for s in self._slots if s is not None)
