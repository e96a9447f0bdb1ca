"""The launcher's watch caches: relist replaces the store, older versions never win, memo TTL."""

from __future__ import annotations

import contextlib
from typing import Any

from launcher.informer import Informer, Recent, meta_of


def obj(name: str, rv: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "labels": labels}}


def rv_of(informer: Informer, name: str) -> str:
    stored = informer.get(name, "ns")
    return "" if stored is None else str(meta_of(stored)[2])


def listing(*items: dict[str, Any], rv: str = "100") -> dict[str, Any]:
    return {"items": list(items), "metadata": {"resourceVersion": rv}}


def test_relist_replaces_the_store_and_reports_gone_objects() -> None:
    changed: list[str] = []
    pages = [listing(obj("a", "1"), obj("b", "2")), listing(obj("b", "3"), rv="200")]
    informer = Informer("things", lambda: pages.pop(0), on_change=lambda o: changed.append(meta_of(o)[1]))
    assert informer._relist() == "100" and informer.synced.is_set()
    assert {meta_of(o)[1] for o in informer.items()} == {"a", "b"}
    assert informer._relist() == "200"
    assert informer.get("a", "ns") is None and rv_of(informer, "b") == "3"
    assert changed == ["a", "b", "b", "a"]  # the second relist reports b (changed) and a (gone)


def test_an_older_version_never_replaces_a_newer_one() -> None:
    informer = Informer("things", listing)
    informer.put(obj("a", "10"))
    informer.put(obj("a", "9"))  # a late watch event after our own write's response
    assert rv_of(informer, "a") == "10"
    informer.put(obj("a", "11"))
    assert rv_of(informer, "a") == "11"
    informer.forget("a", "ns")
    assert informer.get("a", "ns") is None


def test_items_filter_by_labels() -> None:
    informer = Informer("things", lambda: listing(obj("a", "1", owner="x"), obj("b", "2", owner="y")))
    informer._relist()
    assert [meta_of(o)[1] for o in informer.items({"owner": "y"})] == ["b"]
    assert informer.items({"owner": "z"}) == []


def test_recent_remembers_successes_only_and_for_ttl() -> None:
    calls = []

    def fetch() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("404")
        return len(calls)

    memo = Recent(ttl=60)
    with contextlib.suppress(RuntimeError):
        memo.get(("k",), fetch)
    assert memo.get(("k",), fetch) == 2 and memo.get(("k",), fetch) == 2 and len(calls) == 2
    assert Recent(ttl=0).get(("k",), fetch) == 3
