"""The mover Job's configuration: parse and validate the Job environment before any I/O.

Reads only the environment variables of :mod:`jobs.contract` (set by ``launcher.jobspec``);
``JobEnv.from_environ`` raises ConfigError naming the first problem. Used by ``jobs.kube.runner``.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.contract import (
    DATAUPLOAD_KIND,
    DMC_EXCLUDES,
    DMC_PARALLEL_FILES_DOWNLOAD,
    DMC_PARALLEL_FILES_UPLOAD,
    DMC_WRITE_SPARSE_FILES,
    ENV_CR_KIND,
    ENV_CR_NAME,
    ENV_CR_NAMESPACE,
    ENV_CR_UID,
    ENV_DATAMOVER_CONFIG,
    ENV_NODE_NAME,
    ENV_PARALLEL,
    ENV_PARENT_SNAPSHOT,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_SNAPSHOT_ID,
    ENV_SOURCE_NAMESPACE,
    ENV_SOURCE_PVC,
    ENV_TAGS,
    ENV_VOLUME_MODE,
    ENV_VOLUME_PATH,
    VOLUME_MODE_BLOCK,
    datamover_config_problem,
    parent_snapshot_problem,
    whole_number_problem,
)
from jobs.engine.api import DataPathOptions
from jobs.errors import ConfigError


@dataclass(frozen=True)
class JobEnv:
    """The mover's configuration, from the Job environment (validated before any I/O)."""

    kind: str
    namespace: str
    name: str
    uid: str
    volume_path: Path
    block: bool
    repository: str
    password_file: str
    source_namespace: str
    source_pvc: str
    snapshot_id: str
    tags: dict[str, str]
    options: DataPathOptions
    node: str
    excludes: str = ""  # dataMoverConfig.excludes as given: compiled (and refused) by the upload itself
    parent: str = "auto"  # spec.parentSnapshot: auto, none or a snapshot id (upload only)

    @classmethod
    def from_environ(cls, env: dict[str, str], role: str) -> JobEnv:
        """Parse and validate; ConfigError names the first problem."""

        def need(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                raise ConfigError(f"the Job environment lacks {key}; was this Job created by the snapmover launcher?")
            return value

        kind = need(ENV_CR_KIND)
        if (role == "upload") != (kind == DATAUPLOAD_KIND):
            raise ConfigError(f"`snapmover job {role}` cannot run for a {kind}")
        try:
            tags = json.loads(env.get(ENV_TAGS) or "{}")
            dmc = json.loads(env.get(ENV_DATAMOVER_CONFIG) or "{}")
        except ValueError as e:
            raise ConfigError(f"{ENV_TAGS} / {ENV_DATAMOVER_CONFIG} is not valid JSON") from e
        if not isinstance(tags, dict) or not isinstance(dmc, dict):
            raise ConfigError(f"{ENV_TAGS} and {ENV_DATAMOVER_CONFIG} must be JSON objects")
        parent = env.get(ENV_PARENT_SNAPSHOT, "") if role == "upload" else ""
        if parent_snapshot_problem(parent):
            raise ConfigError(parent_snapshot_problem(parent))
        return cls(
            kind=kind,
            namespace=need(ENV_CR_NAMESPACE),
            name=need(ENV_CR_NAME),
            uid=env.get(ENV_CR_UID, ""),
            volume_path=Path(need(ENV_VOLUME_PATH)),
            block=env.get(ENV_VOLUME_MODE, "") == VOLUME_MODE_BLOCK,
            repository=need(ENV_REPOSITORY),
            password_file=need(ENV_PASSWORD_FILE),
            source_namespace=env.get(ENV_SOURCE_NAMESPACE, ""),
            source_pvc=env.get(ENV_SOURCE_PVC, ""),
            snapshot_id=env.get(ENV_SNAPSHOT_ID, "") if role == "download" else "",
            tags={str(k): str(v) for k, v in tags.items()},
            options=data_path_options(dmc, env.get(ENV_PARALLEL, ""), role),
            node=env.get(ENV_NODE_NAME, "") or socket.gethostname(),
            excludes=str(dmc.get(DMC_EXCLUDES) or "") if role == "upload" else "",
            parent=parent or "auto",
        )


def _positive_int(value: str, what: str) -> int:
    problem = whole_number_problem(value, what)
    if problem:
        raise ConfigError(problem)
    return int(str(value).strip())


def data_path_options(dmc: dict[str, Any], parallel: str, role: str) -> DataPathOptions:
    """Map Velero's dataMoverConfig keys (and the launcher's parallelism) onto DataPathOptions."""
    problem = datamover_config_problem(dmc, role)
    if problem:
        raise ConfigError(problem)
    defaults = DataPathOptions()
    workers = _positive_int(parallel, "parallelism") if parallel else defaults.parallel
    key = DMC_PARALLEL_FILES_UPLOAD if role == "upload" else DMC_PARALLEL_FILES_DOWNLOAD
    if dmc.get(key) not in (None, ""):
        workers = int(str(dmc[key]).strip())
    sparse = defaults.write_sparse
    if dmc.get(DMC_WRITE_SPARSE_FILES) not in (None, ""):
        sparse = str(dmc[DMC_WRITE_SPARSE_FILES]).strip().lower() == "true"
    return DataPathOptions(parallel=workers, write_sparse=sparse)
