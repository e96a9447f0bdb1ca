"""The backup's memory budget: by default, what is left of the RSS target after the process's own."""

from __future__ import annotations

from jobs.engine.api import (
    MIN_DATA_BUDGET_BYTES,
    PIPELINE_LIMIT_BYTES,
    RSS_RESERVE_BYTES,
    RSS_TARGET_BYTES,
    DataPathOptions,
    MiB,
    resident_bytes,
)


def test_a_small_process_gets_the_full_pipeline_limit() -> None:
    assert DataPathOptions().pipeline_limit_bytes(30 * MiB) == PIPELINE_LIMIT_BYTES


def test_a_larger_process_leaves_its_pipeline_less_so_the_target_holds() -> None:
    resident = 80 * MiB  # e.g. the S3 client's models loaded
    limit = DataPathOptions().pipeline_limit_bytes(resident)
    assert limit < PIPELINE_LIMIT_BYTES
    assert resident + limit + RSS_RESERVE_BYTES == RSS_TARGET_BYTES


def test_data_budget_never_drops_below_its_floor_and_an_explicit_limit_wins() -> None:
    assert DataPathOptions().data_budget_bytes(RSS_TARGET_BYTES) == MIN_DATA_BUDGET_BYTES
    explicit = DataPathOptions(memory_limit_bytes=512 * MiB, upload_parallel=4, pack_target_bytes=16 * MiB)
    assert explicit.pipeline_limit_bytes(RSS_TARGET_BYTES) == 512 * MiB
    assert explicit.data_budget_bytes(RSS_TARGET_BYTES) == 512 * MiB - 6 * 16 * MiB


def test_resident_bytes_measures_this_process() -> None:
    assert 5 * MiB < resident_bytes() < 4096 * MiB
