"""Unit tests: Velero's dataMoverConfig keys and the Job environment are validated before any I/O."""

from __future__ import annotations

import pytest

from jobs.contract import (
    ENV_CR_KIND,
    ENV_CR_NAME,
    ENV_CR_NAMESPACE,
    ENV_DATAMOVER_CONFIG,
    ENV_PARENT_SNAPSHOT,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_VOLUME_MODE,
    ENV_VOLUME_PATH,
    decode_termination_message,
    encode_termination_message,
)
from jobs.errors import ConfigError
from jobs.kube.env import JobEnv, data_path_options

BASE = {
    ENV_CR_KIND: "DataUpload",
    ENV_CR_NAMESPACE: "ns",
    ENV_CR_NAME: "du",
    ENV_VOLUME_PATH: "/data",
    ENV_VOLUME_MODE: "Filesystem",
    ENV_REPOSITORY: "file:///r",
    ENV_PASSWORD_FILE: "/p",
}


def test_velero_keys_map_to_options() -> None:
    assert data_path_options({"ParallelFilesUpload": "3"}, "", "upload").parallel == 3
    assert data_path_options({"ParallelFilesDownload": "5"}, "", "download").parallel == 5
    assert data_path_options({"WriteSparseFiles": "false"}, "", "download").write_sparse is False
    assert data_path_options({}, "7", "upload").parallel == 7


@pytest.mark.parametrize(
    "dmc",
    [
        {"ParallelFilesUpload": "zero"},
        {"ParallelFilesUpload": "0"},
        {"ParallelFilesUpload": "99999"},
        {"WriteSparseFiles": "maybe"},
    ],
)
def test_bad_values_are_config_errors(dmc: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="dataMoverConfig"):
        data_path_options(dmc, "", "upload")


def test_job_env_requires_the_contract() -> None:
    env = JobEnv.from_environ(dict(BASE, **{ENV_DATAMOVER_CONFIG: '{"ParallelFilesUpload": "2"}'}), "upload")
    assert env.options.parallel == 2 and not env.block
    for key in (ENV_REPOSITORY, ENV_CR_NAME, ENV_PASSWORD_FILE):
        with pytest.raises(ConfigError, match=key):
            JobEnv.from_environ({k: v for k, v in BASE.items() if k != key}, "upload")
    with pytest.raises(ConfigError, match="cannot run"):
        JobEnv.from_environ(BASE, "download")
    with pytest.raises(ConfigError, match="JSON"):
        JobEnv.from_environ(dict(BASE, **{ENV_DATAMOVER_CONFIG: "{"}), "upload")


def test_job_env_parent_snapshot() -> None:
    assert JobEnv.from_environ(BASE, "upload").parent == "auto"
    assert JobEnv.from_environ(dict(BASE, **{ENV_PARENT_SNAPSHOT: ""}), "upload").parent == "auto"
    assert JobEnv.from_environ(dict(BASE, **{ENV_PARENT_SNAPSHOT: "none"}), "upload").parent == "none"
    assert JobEnv.from_environ(dict(BASE, **{ENV_PARENT_SNAPSHOT: "b" * 64}), "upload").parent == "b" * 64
    with pytest.raises(ConfigError, match=r"spec.parentSnapshot 'previous' is not auto, none or"):
        JobEnv.from_environ(dict(BASE, **{ENV_PARENT_SNAPSHOT: "previous"}), "upload")


def test_termination_message_round_trip_and_size_limit() -> None:
    text = encode_termination_message({"phase": "Failed", "message": "x" * 10000})
    assert "\n" not in text and len(text) < 4096
    decoded = decode_termination_message("some log line\n" + text)
    assert decoded is not None and decoded["phase"] == "Failed"
    assert decode_termination_message("Traceback (most recent call last):") is None
