"""The launcher's log lines: JSON with an RFC 3339 UTC time and the CR's kind/namespace/name while
it is reconciled, text with the same prefix; the flag wins over the ConfigMap's logFormat."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from launcher import logfmt
from launcher.config import ConfigurationError, load_config


def capture(fmt: str) -> tuple[io.StringIO, logging.Logger]:
    logfmt.setup(fmt)
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out, logging.getLogger("snapmover.launcher")


def test_json_lines_carry_time_and_the_cr() -> None:
    out, log = capture("json")
    log.info("outside")
    logfmt.reconciling(lambda kind, name: log.warning("inside %s", name), "velero", "DataUpload", "du-1")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "kind" not in first and first["message"] == "outside" and first["level"] == "info"
    assert second == {**second, "kind": "DataUpload", "namespace": "velero", "name": "du-1", "message": "inside du-1"}


def test_text_lines_name_the_cr() -> None:
    out, log = capture("text")
    logfmt.reconciling(lambda kind, name: log.info("hello"), "ns", "DataDownload", "dd-2")
    line = out.getvalue().strip()
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO snapmover.launcher \[DataDownload ns/dd-2\] hello$", line)


def test_context_ends_with_the_reconcile_even_when_it_raises() -> None:
    out, log = capture("json")

    def boom(kind: str, name: str) -> None:
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        logfmt.reconciling(boom, "ns", "DataUpload", "a")
    log.info("after")
    assert "kind" not in json.loads(out.getvalue().splitlines()[-1])


def test_flag_wins_over_configmap_log_format() -> None:
    cfg = load_config({"logFormat": "json"}, "ns")
    assert logfmt.chosen(None, cfg.log_format) == "json"
    assert logfmt.chosen("text", cfg.log_format) == "text"
    with pytest.raises(ConfigurationError):
        load_config({"logFormat": "xml"}, "ns")
