"""AlignedBuffer.close: a view someone else still holds must not fail the job at shutdown."""

from __future__ import annotations

from jobs.storage.base import AlignedBuffer


def test_close_with_an_outstanding_view_leaves_the_unmap_to_that_view() -> None:
    buffer = AlignedBuffer(8192)
    held = buffer.view[:100]  # e.g. kept alive by an exception's traceback
    buffer.close()  # no BufferError
    assert not buffer.unmapped
    held[:3] = b"abc"  # the memory stays valid for the holder
    assert bytes(held[:3]) == b"abc"
    held.release()


def test_close_without_views_unmaps() -> None:
    buffer = AlignedBuffer(8192)
    buffer.view[:4] = b"data"
    buffer.close()
    assert buffer.unmapped
