"""``snapmover job upload|download``: the mover's entry point inside a Kubernetes Job."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import MutableMapping
from typing import Final

import click

from jobs.contract import ENV_CA_CERT, ENV_LOG_FORMAT


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


CA_BUNDLE_FILE: Final = "snapmover-ca.pem"


def install_ca_bundle(environ: MutableMapping[str, str], directory: str | None = None) -> str | None:
    """Write ``$SNAPMOVER_CA_CERT`` (the object store's CA, PEM, set by the launcher from the
    location's caCert) to a file in ``directory`` (default the temp dir, an emptyDir in Jobs) and
    point ``AWS_CA_BUNDLE`` at it; returns its path, or None when no CA is configured."""
    pem = environ.get(ENV_CA_CERT, "")
    if not pem:
        return None
    path = os.path.join(directory or tempfile.gettempdir(), CA_BUNDLE_FILE)
    with open(path, "w", encoding="ascii") as f:
        f.write(pem if pem.endswith("\n") else pem + "\n")
    environ["AWS_CA_BUNDLE"] = path
    return path


def setup_logging(log_format: str) -> None:
    """Log lines to stderr (what `kubectl logs` shows), text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("kubernetes", "urllib3", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=lambda: os.environ.get(ENV_LOG_FORMAT, "text"),
    show_default="text",
    help="Log line format.",
)
def job(log_format: str) -> None:
    """Run inside a mover Job: read the Job environment, move data, write the CR status."""
    setup_logging(log_format)
    install_ca_bundle(os.environ)


@job.command()
def upload() -> None:
    """Back up the volume of this Job's DataUpload."""
    from jobs.kube.runner import run_job

    sys.exit(run_job("upload"))


@job.command()
def download() -> None:
    """Restore this Job's DataDownload into its volume."""
    from jobs.kube.runner import run_job

    sys.exit(run_job("download"))


@job.command()
def forget() -> None:
    """Forget the repository snapshot of a deleted DataUpload (its data is freed by maintenance)."""
    from jobs.kube.runner import run_forget

    sys.exit(run_forget())


@job.command()
def maintain() -> None:
    """Repository maintenance: prune the data no snapshot references (exclusive lock)."""
    from jobs.kube.runner import run_maintenance

    sys.exit(run_maintenance())
