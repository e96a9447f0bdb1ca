"""Figures for ``tests/reliability/RESULTS.md``: the ``figures`` fixture and the table it writes.

A pytest plugin (``tests/conftest.py`` loads it) so reliability tests and e2e tests on the real
node record figures the same way: ``figures.add(area, figure, value)``. At the end of
``make reliability`` (which sets ``SNAPMOVER_RELIABILITY_RESULTS=1``) the table is written anew,
so every figure there comes from the run that wrote it; ``SNAPMOVER_RELIABILITY_RESULTS=merge``
(a run of some test files) replaces only the rows of the areas it recorded and says so in a note
above the table. Without the variable nothing is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

RESULTS = Path(__file__).parent / "reliability" / "RESULTS.md"


@dataclass
class Figures:
    """Rows (area, figure, value) for RESULTS.md, in the order tests recorded them."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, area: str, figure: str, value: object) -> None:
        self.rows.append((area, figure, str(value)))


_FIGURES = Figures()


@pytest.fixture
def figures() -> Figures:
    """Record figures for RESULTS.md."""
    return _FIGURES


def kept_rows(areas: set[str]) -> list[str]:
    """The table rows of RESULTS.md whose area this run did not record (a partial run keeps them)."""
    if not RESULTS.exists():
        return []
    rows = [line for line in RESULTS.read_text().splitlines() if line.startswith("| ") and line.count(" | ") >= 2]
    return [line for line in rows[1:] if line[2:].split(" | ")[0] not in areas]  # rows[0]: the header


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mode = os.environ.get("SNAPMOVER_RELIABILITY_RESULTS")
    if not _FIGURES.rows or mode not in ("1", "merge"):
        return
    outcome = "all tests passed" if exitstatus == 0 else f"pytest exit status {exitstatus} (some tests failed)"
    if mode == "merge":  # a partial run: its areas' rows replace the old ones, the others stay
        areas = {a for a, _f, _v in _FIGURES.rows}
        old = kept_rows(areas)
        text = RESULTS.read_text() if RESULTS.exists() else ""
        same = f"Rows of {', '.join(sorted(areas))} from "  # the note of an earlier run of these areas: replaced
        notes = [line for line in text.splitlines() if line.startswith("Rows of ") and not line.startswith(same)]
        note = f"{same}a partial run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({outcome})."
        head = text.split("| area |")[0].rstrip().splitlines() if text else ["# Reliability results", ""]
        head = [line for line in head if not line.startswith("Rows of ")]
        table = ["| area | figure | value |", "|---|---|---|", *old]
        table += [f"| {a} | {f} | {v.replace('|', '/')} |" for a, f, v in _FIGURES.rows]
        RESULTS.write_text("\n".join([*head, *notes, note, "", *table]) + "\n")
        return
    lines = [
        f"# Reliability results — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"Written by `make reliability` from the run that produced it ({outcome}). "
        "Times are wall-clock figures on the shared 2-core test machine, never asserted.",
        "",
        "| area | figure | value |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {f} | {v.replace('|', '/')} |" for a, f, v in _FIGURES.rows]
    RESULTS.write_text("\n".join(lines) + "\n")
