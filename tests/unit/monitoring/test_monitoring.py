"""The monitoring kit (manifests/monitoring/): its alert rules pass `promtool check rules` and the
`promtool test rules` cases in rules_test.yaml, every series its rules and dashboard use is one the
launcher's registry really exports (scraped after the observation path saw CRs), and metric names
follow the Prometheus conventions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from launcher import metrics

ROOT = Path(__file__).resolve().parents[3]
KIT = ROOT / "manifests" / "monitoring"
HERE = Path(__file__).parent
NAME = re.compile(r"\bsnapmover_[a-z_]+\b")


def promtool() -> str:
    cached = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snapmover/prometheus/usr/bin/promtool"
    found = shutil.which("promtool") or (str(cached) if cached.exists() else None)
    if found is None:
        pytest.fail("promtool missing: run scripts/test.d/10-promtool.sh (make test does)")
    return found


def rules_spec() -> dict[str, Any]:
    doc = yaml.safe_load((KIT / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    return dict(doc["spec"])


def expressions() -> list[str]:
    exprs = [r["expr"] for g in rules_spec()["groups"] for r in g["rules"]]
    dashboard = json.loads((KIT / "dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return exprs


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules_spec()))
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    tool = promtool()
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules_test.yaml"]):
        out = subprocess.run([tool, *args], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_case() -> None:
    cases = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    firing = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t["exp_alerts"]}
    assert firing == {r["alert"] for g in rules_spec()["groups"] for r in g["rules"]}


def scraped_names() -> set[str]:
    metrics.configure("snapmover", started=0.0)
    du = {
        "kind": "DataUpload",
        "metadata": {"name": "du-1", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"datamover": "snapmover", "sourceNamespace": "app", "sourcePVC": "data"},
        "status": {"phase": "InProgress", "progress": {"bytesDone": 5}},
    }
    metrics.observe_cr(du)
    metrics.observe_cr({**du, "metadata": {**du["metadata"], "name": "du-2", "uid": "u2"}})
    metrics.observe_cr({**du, "status": {"phase": "Completed", "completionTimestamp": "2026-01-01T01:00:00Z"}})
    failed = {"phase": "Failed", "message": "storage unreachable", "completionTimestamp": "2026-01-01T01:00:00Z"}
    metrics.observe_cr({**du, "metadata": {**du["metadata"], "uid": "u3"}, "status": failed})
    metrics.set_phase_counts("DataUpload", {"Completed": 1})
    metrics.observe_phase("DataUpload", "InProgress", 3.0)
    metrics.TRANSITIONS.labels("DataUpload", "Completed").inc()
    metrics.BYTES_MOVED.labels("DataUpload").inc(5)
    metrics.MAINTENANCE.labels("failed").inc()
    metrics.API_ERRORS.inc()
    metrics.MOVER_RETRIES.labels("DataUpload").inc()
    metrics.MOVER_PHASES.labels("DataUpload", "Completed").inc()
    text = generate_latest(REGISTRY).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples if not s.name.endswith("_created")}


def test_every_series_the_kit_uses_is_exported_by_the_launcher() -> None:
    exported = scraped_names()
    used = {n for e in expressions() for n in NAME.findall(e)}
    assert used, "the kit uses no snapmover series"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    assert used <= metrics.EXPORTED


def test_exported_names_follow_prometheus_conventions() -> None:
    exported = {n for n in scraped_names() if n.startswith("snapmover_")}
    assert exported == metrics.EXPORTED
    for name in exported:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert not re.search(r"_(bytes|seconds)_[a-z]+_total$", base), name  # the unit goes right before _total
        assert not re.search(r"(milliseconds|_ms|kilobytes|mib|minutes)", base), name  # base units only
    assert "snapmover_moved_bytes_total" in exported


def test_observation_path_derives_the_alert_series() -> None:
    scraped_names()
    sample = REGISTRY.get_sample_value
    assert sample("snapmover_last_successful_backup_timestamp_seconds", {"source_namespace": "app", "pvc": "data"}) == (
        1767229200.0
    )
    # du-1 is Completed now: its active series is gone, du-2's stays
    assert (
        sample(
            "snapmover_active_cr_created_timestamp_seconds",
            {"kind": "DataUpload", "name": "du-1", "phase": "InProgress"},
        )
        is None
    )
    labels = {"kind": "DataUpload", "name": "du-2", "phase": "InProgress"}
    assert sample("snapmover_active_cr_created_timestamp_seconds", labels) == 1767225600.0
    before = sample("snapmover_results_total", {"kind": "DataUpload", "phase": "Failed"}) or 0.0
    assert before >= 1 and (sample("snapmover_failures_total", {"kind": "DataUpload", "cause": "storage"}) or 0) >= 1
    scraped_names()  # the same terminal CRs seen again are not counted again
    assert sample("snapmover_results_total", {"kind": "DataUpload", "phase": "Failed"}) == before


def test_other_data_movers_and_old_results_are_not_counted() -> None:
    metrics.configure("snapmover", started=2e9)
    old = {
        "kind": "DataUpload",
        "metadata": {"name": "old", "uid": "old-1"},
        "spec": {"datamover": "snapmover"},
        "status": {"phase": "Failed", "message": "x", "completionTimestamp": "2026-01-01T00:00:00Z"},
    }
    before = REGISTRY.get_sample_value("snapmover_results_total", {"kind": "DataUpload", "phase": "Failed"}) or 0.0
    metrics.observe_cr(old)
    metrics.observe_cr({**old, "metadata": {"name": "v", "uid": "v-1"}, "spec": {"datamover": "velero"}})
    metrics.observe_cr({"kind": "Job", "metadata": {"name": "j"}})
    after = REGISTRY.get_sample_value("snapmover_results_total", {"kind": "DataUpload", "phase": "Failed"}) or 0.0
    assert after == before


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("prepare timed out after 30m", "timeout"),
        ("wrong password for the repository", "repository"),
        ("storage unreachable: endpoint https://s3.example", "storage"),
        ("ImagePullBackOff: pull access denied", "scheduling"),
        ("VolumeSnapshot snap-1 not found", "volume"),
        ("dataMoverConfig: invalid parallelism", "configuration"),
        ("something else", "other"),
    ],
)
def test_failure_cause(message: str, cause: str) -> None:
    assert metrics.failure_cause(message) == cause


def test_kit_renders_as_a_kustomize_component() -> None:
    overlay = ROOT / "manifests" / "overlays" / "monitoring"
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout)}
    assert {("ServiceMonitor", "snapmover-launcher"), ("PrometheusRule", "snapmover")} <= kinds
    assert ("ConfigMap", "snapmover-grafana-dashboard") in kinds
