"""Building blocks of the bounded multithreaded pipelines: chunker, memory budget, worker stage.

* :class:`Chunker` cuts file data with content-defined chunking (pyfastcdc, seeded with the
  repository's secret so chunk boundaries differ between repositories); its :meth:`Chunker.cut`
  works on windows of a stream and hands back the tail to carry into the next window, so a huge
  file is cut exactly as if it were one buffer while only a window is in memory.
* :class:`BufferPool` / :class:`SharedBuffer`: a fixed set of read windows shared by the store
  tasks that point into them; readers block when all are in use, which is what keeps peak RSS
  independent of volume size.
* :class:`Stage` is a pool of threads consuming a queue; the first exception in any thread
  aborts the whole pipeline (the :class:`Abort` object), and so does a cancel request.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Generic, Protocol, TypeVar

from pyfastcdc import FastCDC

from jobs.errors import CanceledError

_SEED_MASK: Final = (1 << 63) - 1  # pyfastcdc shifts the seed left once inside a signed 64-bit int
WAIT_SLICE_SECONDS: Final = 0.2  # how often blocked threads look at the abort flag


class CdcConfig(Protocol):
    """The repository config fields the chunker needs."""

    @property
    def cdc_min_bytes(self) -> int: ...

    @property
    def cdc_avg_bytes(self) -> int: ...

    @property
    def cdc_max_bytes(self) -> int: ...

    @property
    def cdc_seed(self) -> int: ...


class Chunker:
    """Content-defined chunking with the repository's parameters; thread safe."""

    def __init__(self, config: CdcConfig) -> None:
        self.min_bytes = config.cdc_min_bytes
        self.max_bytes = config.cdc_max_bytes
        self._avg = config.cdc_avg_bytes
        # A zero seed would select pyfastcdc's public gear table: keep the table secret.
        self._seed = (config.cdc_seed & _SEED_MASK) or 1
        self._local = threading.local()

    def _cdc(self) -> FastCDC:
        cdc: FastCDC | None = getattr(self._local, "cdc", None)
        if cdc is None:
            cdc = FastCDC(self._avg, min_size=self.min_bytes, max_size=self.max_bytes, seed=self._seed)
            self._local.cdc = cdc
        return cdc

    def cut(self, data: memoryview, *, final: bool) -> tuple[list[tuple[int, int]], int]:
        """Cut ``data`` into ``(offset, length)`` chunks; returns them and the bytes consumed.

        When ``final`` is False the last piece is not a real boundary (the stream goes on): it is
        left unconsumed, and the caller prepends it to the next window. A window of up to
        ``max_bytes`` may yield nothing; callers grow it (carry + next read) until it does.
        """
        if len(data) <= self.min_bytes:
            return ([(0, len(data))] if final and len(data) else []), (len(data) if final else 0)
        chunks = [(c.offset, c.length) for c in self._cdc().cut_buf(data)]
        if not final and chunks:
            chunks.pop()
        consumed = chunks[-1][0] + chunks[-1][1] if chunks else 0
        return chunks, consumed


class Abort:
    """Shared stop flag of one pipeline run: set by a cancel request or the first failure."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel
        self._failed = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        """Record the first failure and stop every stage."""
        with self._lock:
            if self.error is None:
                self.error = error
        self._failed.set()

    @property
    def is_set(self) -> bool:
        """True when the pipeline must stop (cancel requested or a stage failed)."""
        return self._failed.is_set() or (self._cancel is not None and self._cancel.is_set())

    def check(self) -> None:
        """Raise the recorded failure, or CanceledError when a cancel was requested."""
        if self.error is not None:
            raise self.error
        if self._cancel is not None and self._cancel.is_set():
            raise CanceledError("canceled on request; no snapshot was written")

    @contextmanager
    def guarded(self, cleanup: Callable[[], None]) -> Iterator[None]:
        """Run the owner thread's part of a pipeline: a ``Stopped`` ends it quietly, any other
        error is recorded (so every stage stops), ``cleanup`` (closing the stages) always runs,
        and then the first recorded failure, or the cancel, is raised by :meth:`check`."""
        try:
            yield
        except Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - stops every stage; re-raised by check()
            self.fail(e)
        finally:
            cleanup()
        self.check()


class Stopped(Exception):
    """A blocked call gave up because the pipeline is aborting (the Abort object says why)."""


class BufferPool:
    """A fixed set of equal-size buffers, allocated once: reading windows never churns the allocator.

    (Freshly allocated large buffers either page-fault on every use or, after glibc raises its
    mmap threshold, fragment per-thread arenas so RSS grows past the budget; reuse avoids both.)
    """

    def __init__(self, buffer_bytes: int, count: int, abort: Abort) -> None:
        self.buffer_bytes = buffer_bytes
        self._unallocated = max(1, count)
        self._free: list[memoryview] = []
        self._cond = threading.Condition()
        self._abort = abort

    def acquire(self) -> memoryview:
        """A free buffer (blocks while all are in use); raises Stopped when the pipeline aborts."""
        with self._cond:
            while not self._free:
                if self._unallocated:
                    self._unallocated -= 1
                    return memoryview(bytearray(self.buffer_bytes))
                if self._abort.is_set:
                    raise Stopped
                self._cond.wait(WAIT_SLICE_SECONDS)
            return self._free.pop()

    def release(self, buf: memoryview) -> None:
        """Return a buffer; nobody may use views of it afterwards."""
        with self._cond:
            self._free.append(buf)
            self._cond.notify()


class SharedBuffer:
    """A pooled buffer shared by several holders; it goes back to the pool when the last lets go."""

    def __init__(self, pool: BufferPool) -> None:
        self.pool = pool
        self.view = pool.acquire()
        self._holders = 1
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Add a holder (a task that reads from the buffer)."""
        with self._lock:
            self._holders += 1

    def let_go(self) -> None:
        """Drop one holder; the last one returns the buffer to the pool."""
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self.pool.release(self.view)


T = TypeVar("T")
_SENTINEL: Final[Any] = object()


class Stage(Generic[T]):
    """``threads`` workers running ``handler`` on queued items; a bounded queue when ``depth`` > 0."""

    def __init__(self, name: str, threads: int, handler: Callable[[T], None], abort: Abort, *, depth: int = 0) -> None:
        self._queue: queue.Queue[T] = queue.Queue(maxsize=depth)
        self._handler = handler
        self._abort = abort
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def put(self, item: T) -> None:
        """Queue an item, blocking while the queue is full; raises Stopped when aborting."""
        while True:
            if self._abort.is_set:
                raise Stopped
            try:
                self._queue.put(item, timeout=WAIT_SLICE_SECONDS)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Let the workers finish the queued items, then wait for them to exit."""
        for _ in self._threads:
            self._queue.put(_SENTINEL)
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _SENTINEL:
                return
            if self._abort.is_set:
                continue  # drain without working so close() returns promptly
            try:
                self._handler(item)
            except Stopped:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the pipeline's owner thread
                self._abort.fail(e)
            del item  # do not keep the last item's buffers alive while waiting for the next
