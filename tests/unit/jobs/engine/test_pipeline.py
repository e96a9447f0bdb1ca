"""Chunker windows, memory budget and stage error propagation."""

from __future__ import annotations

import os
import threading

import pytest

from jobs.engine.pipeline import Abort, BufferPool, Chunker, SharedBuffer, Stage, Stopped
from jobs.errors import CanceledError, VolumeIOError
from tests.unit.jobs.engine.fakerepo import FakeConfig, MiB


def _cut_in_windows(chunker: Chunker, data: bytes, window: int) -> list[bytes]:
    out: list[bytes] = []
    carry = b""
    pos = 0
    while True:
        piece = carry + data[pos : pos + window]
        pos += window
        final = pos >= len(data)
        chunks, consumed = chunker.cut(memoryview(piece), final=final)
        out.extend(piece[o : o + n] for o, n in chunks)
        if final:
            return out
        carry = piece[consumed:]


def test_windowed_cutting_equals_whole_buffer_cutting() -> None:
    chunker = Chunker(FakeConfig())
    data = os.urandom(21 * MiB + 12345)
    whole = [data[o : o + n] for o, n in chunker.cut(memoryview(data), final=True)[0]]
    assert b"".join(whole) == data
    assert len(whole) > 5
    assert _cut_in_windows(chunker, data, 9 * MiB) == whole  # windows > max chunk (4 MiB)


def test_seed_changes_boundaries_and_small_input_is_one_chunk() -> None:
    data = os.urandom(8 * MiB)
    a = Chunker(FakeConfig(cdc_seed=1)).cut(memoryview(data), final=True)[0]
    b = Chunker(FakeConfig(cdc_seed=2)).cut(memoryview(data), final=True)[0]
    assert a != b
    small = memoryview(b"x" * 1000)
    assert Chunker(FakeConfig()).cut(small, final=True) == ([(0, 1000)], 1000)
    assert Chunker(FakeConfig()).cut(small, final=False) == ([], 0)


def test_huge_seed_is_accepted() -> None:
    chunker = Chunker(FakeConfig(cdc_seed=(1 << 64) - 1))
    assert chunker.cut(memoryview(os.urandom(MiB)), final=True)[1] == MiB


def test_buffer_pool_blocks_until_a_buffer_is_let_go_and_stops_on_abort() -> None:
    cancel = threading.Event()
    abort = Abort(cancel)
    pool = BufferPool(1024, 2, abort)
    first, second = SharedBuffer(pool), SharedBuffer(pool)
    first.hold()  # a store task points into it
    first.let_go()  # the reader is done with it; the task still holds it
    got = threading.Event()

    def third() -> None:
        SharedBuffer(pool)
        got.set()

    t = threading.Thread(target=third)
    t.start()
    assert not got.wait(0.3)
    first.let_go()  # the task is done: the buffer goes back to the pool
    assert got.wait(5)
    t.join()
    assert len(second.view) == 1024
    cancel.set()
    with pytest.raises(Stopped):
        SharedBuffer(pool)
    with pytest.raises(CanceledError):
        abort.check()


def test_stage_records_the_first_error_and_aborts() -> None:
    abort = Abort(None)
    seen: list[int] = []

    def handler(item: int) -> None:
        seen.append(item)
        if item == 3:
            raise VolumeIOError("boom")

    stage: Stage[int] = Stage("t", 2, handler, abort, depth=2)
    with pytest.raises(Stopped):
        for i in range(10_000):
            stage.put(i)
    stage.close()
    assert abort.is_set
    with pytest.raises(VolumeIOError, match="boom"):
        abort.check()
    assert len(seen) < 10_000
