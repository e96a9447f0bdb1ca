"""Filesystem backups by several processes: one coordinator and K forked workers.

Called by :func:`jobs.engine.api.backup` instead of :class:`jobs.engine.backup.FilesystemBackup`
when asked for (``upload --processes``; opt-in until the workers' summed memory fits the default
budget: ~245 MiB summed VmRSS at 100k small files against 167 MiB in one process). Per-file work holds the GIL, so one
process cannot use more than about one core on small files; K workers can use K::

    coordinator (caller's process)                     worker k (forked child, k = 0 .. K-1)
      units of work: one directory each  --units-->      lists it, compares with the parent
      assembles trees bottom-up          <--listed--      snapshot, reads, hashes, stores its
      stores the trees of directories    <--tree/parts--  files into packs and index files of
        that have subdirectories                           its own (FormAT §7), stores the tree
      routes hardlinks, feeds progress   <--progress--     of a directory without subdirectories

* A unit is ONE directory's own entries, not its subtree, so one huge subtree is spread over every
  worker. A worker reports the subdirectories as soon as it has listed a directory (the coordinator
  hands them out at once), and the directory when its files are complete: a directory without
  subdirectories as its stored tree id, any other as its tree encoded but for the subdirectory
  entries (:func:`jobs.repository.tree.encode_tree_parts`), which the coordinator fills in with
  their tree ids and stores. The coordinator's work is per directory, never per file.
* Each worker runs the same bounded pipeline as a single-process backup (its walker takes the
  directories it is handed); unchanged files and directories are reused from the parent snapshot as
  there. Workers are forked once the repository is open and its index loaded: each shares that
  index copy-on-write and dedups against it exactly. A chunk new in this backup that two workers
  both meet is stored by both (a harmless duplicate, FORMAT.md §7).
* A file with several links is stored once, by the worker ``hash((dev, inode)) % K``. A worker that
  lists one of its names and is not that owner leaves the entry open and asks the coordinator,
  which has the owner store the file (once) and fills every open name with the owner's answer.
* Messages go in batches (one per directory listed or completed), over one socket pair per worker.
* Errors: the first failure of any worker (its VolumeIOError, IntegrityError, ...) is re-raised
  here as is; a worker that dies (SIGKILL, OOM) fails the backup with one clear message; either way
  the other workers are stopped and no snapshot is written. A cancel stops every worker, each of
  which indexes what it uploaded (a retry reuses it).
* Fork safety: the repository copies the workers use are made before the fork (nothing in them was
  ever used by a thread); a child touches nothing else its parent's threads may hold, never returns
  into the caller, and ends with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any, Final, Protocol

from jobs.engine.backup import (
    BackupRepository,
    FilesystemBackup,
    TreeStats,
    _Dir,
    node_from_stat,
    old_subtree,
    source_root,
    store_tree,
)
from jobs.engine.pipeline import Abort, Stopped
from jobs.engine.progress import ProgressTracker
from jobs.errors import MoverError, VolumeIOError
from jobs.repository.tree import NODE_DIR, NODE_FILE, ContentRef, Node, TreeParts, encode_tree_parts, join_tree_parts
from jobs.repository.writer import PACKS_IN_FLIGHT
from jobs.volume.patterns import PathFilter

UNITS_AHEAD: Final = 4  # directories handed to a worker and not yet listed by it
WORKER_SMALL_BATCHES: Final = 16  # a worker's small-file queue: short, so no worker runs far ahead
IDLE_POLL_SECONDS: Final = 0.02  # a worker with nothing to walk looks for messages this often
WAIT_SLICE_SECONDS: Final = 0.2  # the coordinator looks at the cancel flag this often
STOP_WAIT_SECONDS: Final = 30.0  # stopped workers get this long to index their uploads, then are killed

Message = tuple[Any, ...]
LinkKey = tuple[int, int]  # (dev, inode) of a file with several links


def backup_processes(parallel: int) -> int:
    """How many worker processes a filesystem backup uses: the CPUs this process may run on,
    at most ``parallel`` (1: the single-process pipeline)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, parallel))


class WorkerRepository(BackupRepository, Protocol):
    """What a worker needs of its own repository copy beyond the backup pipeline's needs."""

    def after_fork(self) -> None: ...

    def flush(self) -> None: ...

    @property
    def index_files(self) -> list[str]: ...


class ForkableRepository(BackupRepository, Protocol):
    """The repository of the coordinator: it makes the workers' copies and takes their index files."""

    def worker_copy(self, *, upload_parallel: int, packs_in_flight: int) -> WorkerRepository | None: ...

    def adopt_index_files(self, names: list[str]) -> None: ...


# --- worker side ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _UnitDir(_Dir):
    unit: int = 0
    holes: list[Node] = field(default_factory=list)  # entries the coordinator completes
    link: LinkKey | None = None  # a link request: a pseudo directory of the one file asked for


class _UnitBackup(FilesystemBackup):
    """A worker's pipeline: walks the directories it is handed, each without descending into its
    subdirectories, and queues what the coordinator must hear (:meth:`take_messages`)."""

    def __init__(
        self,
        repo: BackupRepository,
        source: str,
        *,
        worker: int,
        workers: int,
        parallel: int,
        memory_budget_bytes: int,
        progress: ProgressTracker,
        abort: Abort,
        excludes: PathFilter | None,
    ) -> None:
        super().__init__(
            repo,
            source,
            parallel=parallel,
            memory_budget_bytes=memory_budget_bytes,
            progress=progress,
            abort=abort,
            parent_root=None,
            excludes=excludes,
        )
        self._worker, self._workers = worker, workers
        self._out: list[Message] = []  # under self._lock
        self._sent = (0, 0, 0, 0, 0)  # progress counters already reported

    @property
    def stats(self) -> TreeStats:
        """Files, directories and bytes stored by this worker so far."""
        return self._stats

    def take_messages(self) -> list[Message]:
        """What happened since the last call, in order, with a progress tally at the end."""
        p = self._progress
        now = (p.total_bytes, p.bytes_done, p.files_total, p.files_done, p.new_bytes)
        with self._lock:
            out, self._out = self._out, []
        if now != self._sent:
            out.append(("progress", *(a - b for a, b in zip(now, self._sent, strict=True))))
            self._sent = now
        return out

    def _say(self, message: Message) -> None:
        with self._lock:
            self._out.append(message)

    # the walker, driven by worker_loop -------------------------------------------------------------

    def start(self) -> None:
        """Start the pipeline's threads (in the child, after the fork)."""
        self._start_stages(WORKER_SMALL_BATCHES)

    def stop(self) -> None:
        """Let the stages finish what is queued, then stop their threads."""
        self._close_stages()

    def walk_next(self, stack: list[tuple[_Dir, str]]) -> None:
        """Walk the top directory of ``stack`` (loading parent-snapshot listings ahead in bulk);
        the small files batched so far go to the lane once nothing is left to walk."""
        if stack[-1][0].parent_entries is None:
            self._load_parent_trees(stack)
        d, path = stack.pop()
        self._walk_dir(d, path, stack)
        if not stack:
            self._flush_small()

    def link_request(self, key: LinkKey, path: str) -> None:
        """Store the file ``path`` (the owner of ``key``) and report its content, once complete."""
        try:
            st = os.lstat(path)
        except OSError as e:
            raise VolumeIOError(f"{path}: cannot read file: {e.strerror}") from e
        node = node_from_stat(os.path.basename(path), path, st, xattrs=False)
        if node.type != NODE_FILE:
            raise VolumeIOError(f"{path}: the file was replaced during the backup")
        node.dev, node.inode = key
        d = _UnitDir(Node(name="", type=NODE_DIR), None, {}, link=key)
        d.entries.append(node)
        d.pending += 1
        files_total = self._walked[1]
        done = super()._add_file(d, node, path)
        self._walked[1] = files_total  # the name was counted by the worker that listed it
        self._report_walked()
        self._flush_small()
        self._release(d, done + 1)

    # hooks of FilesystemBackup ---------------------------------------------------------------------

    def _push_subdirs(self, d: _Dir, subdirs: list[tuple[Node, str]], stack: list[tuple[_Dir, str]]) -> int:
        assert isinstance(d, _UnitDir)
        self._stats.dirs += len(subdirs)
        d.holes += [node for node, _ in subdirs]
        self._say(("listed", d.unit, [(node.name, old_subtree(d, node.name)) for node, _ in subdirs]))
        return len(subdirs)  # complete here: the coordinator fills their subtree ids in

    def _add_file(self, d: _Dir, node: Node, path: str) -> bool:
        key = (node.dev, node.inode)
        if node.nlink == 1 or hash(key) % self._workers == self._worker:
            return super()._add_file(d, node, path)
        assert isinstance(d, _UnitDir)
        self._walked[1] += 1  # its bytes are counted by the owner
        old = self._unchanged_file(d, node)
        if old is not None:
            node.content, node.xattrs = old.content, old.xattrs
            self._walked[3] += 1
        else:
            d.holes.append(node)
            self._say(("need", key, path))
        return True

    def _complete(self, d: _Dir) -> _Dir | None:
        assert isinstance(d, _UnitDir)
        if d.link is not None:
            node = d.entries[0]
            self._say(("link", d.link, node.content, node.xattrs, node.size))
        elif not d.holes and self._unchanged_tree(d):
            self._say(("tree", d.unit, d.old_tree))
        else:
            # the coordinator stores every tree: the trees of all workers share its packs
            # (one open tree pack in all) and identical trees are stored once
            parts = encode_tree_parts(d.entries, d.holes)
            self._say(("parts", d.unit, parts))
        d.entries, d.parent_entries, d.holes = [], {}, []
        return None


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a MoverError with its message and exit code."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, never stored or received
        return error
    except Exception:  # noqa: BLE001 - any exception type can fail to pickle in its own way
        copy = MoverError(str(error) or type(error).__name__)
        copy.exit_code = getattr(error, "exit_code", MoverError.exit_code)
        return copy


def _worker_main(conn: connection.Connection, repo: WorkerRepository, source: str, settings: _Settings, k: int) -> None:
    """A worker process's life: serve the coordinator until it says the backup is complete (then
    flush and report), or stops it (then index what was uploaded) or an error stops this one."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the coordinator, which stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    repo.after_fork()
    cancel = threading.Event()
    abort = Abort(cancel)
    backup = _UnitBackup(
        repo,
        source,
        worker=k,
        workers=settings.workers,
        parallel=settings.parallel,
        memory_budget_bytes=settings.memory_budget_bytes,
        progress=ProgressTracker(None),
        abort=abort,
        excludes=settings.excludes,
    )
    inherited = len(repo.index_files)
    final: Message
    try:
        _serve(conn, backup, abort, cancel)
        repo.flush()
        stats = backup.stats
        final = ("finished", stats.files, stats.dirs, stats.stored_bytes, repo.index_files[inherited:])
    except BaseException as e:  # noqa: BLE001 - reported to the coordinator, which re-raises it
        if abort.error is None and cancel.is_set():
            with contextlib.suppress(BaseException):
                repo.flush()  # index what was uploaded so a retry reuses it
            final = ("canceled", repo.index_files[inherited:])
        else:
            final = ("error", _portable(abort.error or e))
    conn.send([*backup.take_messages(), final])


def _serve(conn: connection.Connection, backup: _UnitBackup, abort: Abort, cancel: threading.Event) -> None:
    """Take directories and link requests from ``conn`` and walk them until told the backup is
    complete; raises the pipeline's error, or CanceledError when stopped."""
    inbox = _Inbox(conn, cancel)
    backup.start()
    with abort.guarded(backup.stop):
        while not (inbox.ending and not inbox.stack):
            inbox.take(wait=not (inbox.stack or inbox.links))
            if abort.is_set:
                raise Stopped
            while inbox.links:
                backup.link_request(*inbox.links.pop())
            if inbox.stack:
                backup.walk_next(inbox.stack)
            out = backup.take_messages()
            if out:
                conn.send(out)


class _Inbox:
    """What the coordinator told a worker: directories to walk, link requests, end or cancel."""

    def __init__(self, conn: connection.Connection, cancel: threading.Event) -> None:
        self._conn = conn
        self._cancel = cancel
        self.stack: list[tuple[_Dir, str]] = []
        self.links: list[tuple[LinkKey, str]] = []
        self.ending = False

    def take(self, *, wait: bool) -> None:
        """Read every message there is (``wait``: for up to IDLE_POLL_SECONDS for the first)."""
        timeout = IDLE_POLL_SECONDS if wait else 0.0
        while self._conn.poll(timeout):
            timeout = 0.0
            for message in self._conn.recv():
                kind = message[0]
                if kind == "units":
                    for unit, path, old_tree in reversed(message[1]):
                        entries: dict[str, Node] | None = None if old_tree is not None else {}
                        d = _UnitDir(Node(name="", type=NODE_DIR), None, entries, old_tree, unit=unit)
                        self.stack.append((d, path))
                elif kind == "links":
                    self.links += message[1]
                elif kind == "end":
                    self.ending = True
                else:  # "cancel"
                    self._cancel.set()


# --- coordinator side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    workers: int
    parallel: int
    memory_budget_bytes: int
    excludes: PathFilter | None


@dataclass(eq=False)
class _Unit:
    """A directory handed out, until its tree is stored."""

    id: int
    path: str
    parent: _Unit | None
    name: str  # its entry in the parent
    old_tree: str | None
    open_subdirs: dict[str, Node | None] = field(default_factory=dict)  # name -> hole (None: not reported yet)
    early: dict[str, str] = field(default_factory=dict)  # subdirectories' tree ids that came before the hole
    parts: TreeParts | None = None  # its encoded tree but for the holes (None: not complete yet)
    missing: int = 0  # holes of ``parts`` still open


@dataclass(eq=False)
class _Worker:
    pid: int
    conn: connection.Connection
    unwalked: int = 0  # units handed out and not listed yet
    outbox: list[Message] = field(default_factory=list)
    final: Message | None = None  # its last message
    status: int | None = None  # its wait status once reaped


class ParallelBackup:
    """One run of the multi-process filesystem backup; use :meth:`run` once."""

    def __init__(
        self,
        repo: ForkableRepository,
        source: str,
        *,
        workers: int,
        parallel: int,
        upload_parallel: int,
        memory_budget_bytes: int,
        progress: ProgressTracker,
        abort: Abort,
        parent_root: str | None,
        excludes: PathFilter | None = None,
    ) -> None:
        self._repo = repo
        self._source = source
        self._settings = _Settings(workers, parallel, memory_budget_bytes // workers, excludes)
        # the workers' pack buffers add up: together they hold about what one process would
        self._upload_parallel = max(1, upload_parallel // workers)
        self._packs_in_flight = max(1, max(PACKS_IN_FLIGHT, upload_parallel) // workers)
        self._progress = progress
        self._abort = abort
        self._parent_root = parent_root
        self._workers: list[_Worker] = []
        self._units: dict[int, _Unit] = {}
        self._ready: list[_Unit] = []  # handed out last in, first out: depth first
        self._next_id = 0
        self._stats = TreeStats()
        self._root_tree: str | None = None
        self._links: dict[LinkKey, tuple[list[ContentRef], dict[str, str], int]] = {}
        self._link_waiters: dict[LinkKey, list[tuple[_Unit, Node]]] = {}
        self._asked: set[LinkKey] = set()

    def run(self) -> TreeStats | None:
        """Back the tree up; returns the root tree id and counts, or None when the repository's
        storage cannot be shared with worker processes (the caller then uses one process).

        Raises what FilesystemBackup.run raises; MoverError when a worker process dies."""
        source, root_node, old_root = source_root(self._repo, self._source, self._parent_root)
        copies = [
            self._repo.worker_copy(upload_parallel=self._upload_parallel, packs_in_flight=self._packs_in_flight)
            for _ in range(self._settings.workers)
        ]
        if any(c is None for c in copies):
            return None
        self._source = source
        with self._abort.guarded(self._stop):  # re-raised once the workers are stopped
            self._start(source, [c for c in copies if c is not None])
            self._add_unit(source, None, "", old_root)
            self._coordinate()
            self._finish()
        if self._root_tree is None:
            raise MoverError("internal error: the backup finished with incomplete directories")
        root_node.subtree = self._root_tree
        self._stats.root, stored = store_tree(self._repo, [root_node])
        self._stats.stored_bytes += stored
        return self._stats

    def _start(self, source: str, copies: list[WorkerRepository]) -> None:
        """Fork the workers. Each child closes the parent's ends of every socket pair and never
        returns from here."""
        gc.freeze()  # the collector of a child then leaves the inherited objects' pages shared
        try:
            for k, copy in enumerate(copies):
                ours, theirs = connection.Pipe()
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child's coverage is not collected
                    code = 1
                    try:
                        ours.close()
                        for w in self._workers:
                            w.conn.close()
                        _worker_main(theirs, copy, source, self._settings, k)
                        code = 0
                    finally:
                        os._exit(code)
                theirs.close()  # so a dead worker's socket reads as closed
                self._workers.append(_Worker(pid, ours))
        finally:
            gc.unfreeze()

    def _add_unit(self, path: str, parent: _Unit | None, name: str, old_tree: str | None) -> _Unit:
        unit = _Unit(self._next_id, path, parent, name, old_tree)
        self._next_id += 1
        self._units[unit.id] = unit
        self._ready.append(unit)
        return unit

    def _coordinate(self) -> None:
        """Hand out directories and take the workers' messages until the root tree is known."""
        while self._root_tree is None:
            self._hand_out()
            self._exchange()

    def _hand_out(self) -> None:
        while self._ready:
            w = min(self._workers, key=lambda w: w.unwalked)
            room = UNITS_AHEAD - w.unwalked
            if room <= 0:
                break
            batch = [self._ready.pop() for _ in range(min(room, len(self._ready)))]
            w.unwalked += len(batch)
            w.outbox.append(("units", [(u.id, u.path, u.old_tree) for u in batch]))

    def _exchange(self) -> None:
        """Send what is queued for the workers, then handle what they sent (waiting a little)."""
        for w in self._workers:
            if w.outbox:
                batch, w.outbox = w.outbox, []
                w.conn.send(batch)
        if self._abort.is_set:
            raise Stopped
        by_conn = {w.conn: w for w in self._workers if w.final is None}
        for conn in connection.wait(list(by_conn), timeout=WAIT_SLICE_SECONDS):
            w = by_conn[conn]  # type: ignore[index]
            for message in self._receive(w):
                self._handle(w, message)

    def _receive(self, w: _Worker) -> list[Message]:
        try:
            messages: list[Message] = w.conn.recv()
        except (EOFError, OSError):
            raise MoverError(f"{self._dead(w)}; no snapshot was written") from None
        return messages

    def _dead(self, w: _Worker) -> str:
        """Why worker ``w`` is gone (it closed its socket without a last word)."""
        self._reap(w, timeout=5.0)
        status = w.status
        if status is None:
            how = "closed its connection"
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            hint = " (out of memory?)" if sig == signal.SIGKILL else ""
            how = f"was killed by signal {sig} ({signal.Signals(sig).name}){hint}"
        else:
            how = f"exited with code {os.waitstatus_to_exitcode(status)}"
        return f"a backup worker process (pid {w.pid}) {how} before it finished"

    def _handle(self, w: _Worker, message: Message) -> None:
        kind = message[0]
        if kind == "progress":
            total_bytes, bytes_done, files_total, files_done, new_bytes = message[1:]
            self._progress.add(
                total_bytes=total_bytes,
                bytes_done=bytes_done,
                files_total=files_total,
                files_done=files_done,
                new_bytes=new_bytes,
            )
        elif kind == "listed":
            w.unwalked -= 1
            unit = self._units[message[1]]
            for name, old_tree in reversed(message[2]):  # handed out in name order
                unit.open_subdirs[name] = None
                self._add_unit(os.path.join(unit.path, name), unit, name, old_tree)
        elif kind == "tree":
            self._tree_done(self._units[message[1]], message[2])
        elif kind == "parts":
            self._parts(self._units[message[1]], message[2])
        elif kind == "need":
            key, path = message[1], message[2]
            if key not in self._asked:
                self._asked.add(key)
                self._workers[hash(key) % len(self._workers)].outbox.append(("links", [(key, path)]))
        elif kind == "link":
            self._link_done(message[1], message[2], message[3], message[4])
        elif kind == "error":
            w.final = message
            raise message[1]
        else:  # "finished" / "canceled"
            w.final = message

    def _parts(self, unit: _Unit, parts: TreeParts) -> None:
        """A directory's files are complete; its tree waits for the holes in ``parts``."""
        unit.parts = parts
        for node in parts:
            if isinstance(node, str):
                continue
            if node.type == NODE_DIR:
                done = unit.early.pop(node.name, None)
                if done is None:
                    unit.open_subdirs[node.name] = node
                    unit.missing += 1
                else:
                    node.subtree = done
            else:
                key = (node.dev, node.inode)
                known = self._links.get(key)
                if known is None:
                    self._link_waiters.setdefault(key, []).append((unit, node))
                    unit.missing += 1
                else:
                    node.content, node.xattrs, node.size = known
        self._maybe_complete(unit)

    def _link_done(self, key: LinkKey, content: list[ContentRef], xattrs: dict[str, str], size: int) -> None:
        self._links[key] = (content, xattrs, size)
        for unit, node in self._link_waiters.pop(key, []):
            node.content, node.xattrs, node.size = content, xattrs, size
            unit.missing -= 1
            self._maybe_complete(unit)

    def _tree_done(self, unit: _Unit, tree: str) -> None:
        """``unit``'s tree is stored: fill it in where its parent waits (and so on upwards)."""
        while True:
            del self._units[unit.id]
            parent = unit.parent
            if parent is None:
                self._root_tree = tree
                return
            hole = parent.open_subdirs.pop(unit.name)
            if hole is None:  # the parent's files are not complete yet
                parent.early[unit.name] = tree
                return
            hole.subtree = tree
            parent.missing -= 1
            if not self._complete(parent):
                return
            unit, tree = parent, self._store(parent)

    def _complete(self, unit: _Unit) -> bool:
        return unit.parts is not None and unit.missing == 0 and not unit.open_subdirs

    def _maybe_complete(self, unit: _Unit) -> None:
        if self._complete(unit):
            self._tree_done(unit, self._store(unit))

    def _store(self, unit: _Unit) -> str:
        assert unit.parts is not None
        data = join_tree_parts(unit.parts)
        unit.parts = None
        cid = self._repo.chunk_id(data)
        self._stats.stored_bytes += self._repo.add_blob("tree", cid, data)
        return cid

    def _finish(self) -> None:
        """Everything is walked: every worker flushes its packs and index files and reports."""
        for w in self._workers:
            w.outbox.append(("end",))
        while any(w.final is None for w in self._workers):
            self._exchange()
        for w in self._workers:
            assert w.final is not None
            if w.final[0] != "finished":
                raise MoverError(f"internal error: a backup worker ended with {w.final[0]!r}")
            self._stats.files += w.final[1]
            self._stats.dirs += w.final[2]
            self._stats.stored_bytes += w.final[3]
            self._repo.adopt_index_files(w.final[4])

    def _stop(self) -> None:
        """Stop the workers still running (each indexes what it uploaded), then reap them all;
        one that does not stop within STOP_WAIT_SECONDS is killed."""
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for w in self._live():
            with contextlib.suppress(OSError):
                w.conn.send([("cancel",)])
        while time.monotonic() < deadline:
            live = {w.conn: w for w in self._live()}
            if not live:
                break
            for conn in connection.wait(list(live), timeout=WAIT_SLICE_SECONDS):
                self._last_words(live[conn])  # type: ignore[index]
        for w in self._workers:
            if w.final is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
            self._reap(w, timeout=None)
            w.conn.close()

    def _last_words(self, w: _Worker) -> None:
        """Messages of a worker being stopped: only its tallies and its last message count."""
        try:
            for message in w.conn.recv():
                if message[0] in ("finished", "canceled", "error"):
                    w.final = message
                    if message[0] == "canceled":
                        self._repo.adopt_index_files(message[1])
                elif message[0] == "progress":
                    self._handle(w, message)
        except (EOFError, OSError):
            w.final = ("gone",)

    def _live(self) -> Iterator[_Worker]:
        return (w for w in self._workers if w.final is None)

    def _reap(self, w: _Worker, timeout: float | None) -> None:
        """Collect ``w``'s exit status (waiting at most ``timeout`` seconds; None: until it exits)."""
        if w.status is not None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(w.pid, 0 if deadline is None else os.WNOHANG)
                if pid == w.pid:
                    w.status = status
                    return
            if deadline is None or time.monotonic() >= deadline:
                return
            time.sleep(0.01)
