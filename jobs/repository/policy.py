"""Retention policy: which snapshots ``forget --keep-*`` keeps (restic-style buckets).

Snapshots (optionally only those carrying every given tag) are sorted newest first; a snapshot
is kept when it is among the ``keep_last`` newest, or is the newest of a day / ISO week / month
not yet covered, up to ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` such periods.
Snapshots without the tags are never removed. Pure function, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar


class Dated(Protocol):
    """What the policy needs of a snapshot."""

    @property
    def time(self) -> str: ...

    @property
    def tags(self) -> dict[str, str]: ...


T = TypeVar("T", bound=Dated)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def select_forget(
    snapshots: Sequence[T],
    *,
    keep_last: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    tags: Mapping[str, str] | None = None,
) -> tuple[list[T], list[T]]:
    """Split the snapshots matching ``tags`` into (keep, remove)."""
    wanted = dict(tags or {})
    matching = [s for s in snapshots if all(s.tags.get(k) == v for k, v in wanted.items())]
    matching.sort(key=lambda s: _parse_time(s.time), reverse=True)
    buckets: dict[str, tuple[int, Callable[[datetime], str]]] = {
        "daily": (keep_daily, lambda t: t.strftime("%Y-%m-%d")),
        "weekly": (keep_weekly, lambda t: f"{t.isocalendar()[0]:04d}-W{t.isocalendar()[1]:02d}"),
        "monthly": (keep_monthly, lambda t: t.strftime("%Y-%m")),
    }
    seen: dict[str, set[str]] = {k: set() for k in buckets}
    keep: list[T] = []
    remove: list[T] = []
    for position, snap in enumerate(matching):
        moment = _parse_time(snap.time)
        kept = position < keep_last
        for name, (limit, period_of) in buckets.items():
            period = period_of(moment)
            if len(seen[name]) < limit and period not in seen[name]:
                seen[name].add(period)
                kept = True
        (keep if kept else remove).append(snap)
    return keep, remove
