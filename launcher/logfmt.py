"""The launcher's log lines: text or JSON, RFC 3339 UTC timestamps, and the CR being reconciled.

``setup(fmt)`` installs the handler (``snapmover launcher --log-format``, else the ConfigMap's
``logFormat``). While the controller reconciles a CR it runs inside :func:`reconciling`, so every
line logged meanwhile (from any module) carries the CR's kind, namespace and name: JSON fields
``kind``/``namespace``/``name``, or a ``[Kind namespace/name]`` prefix in text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, TypeVar

FORMATS: Final = ("text", "json")
NOISY_LOGGERS: Final = ("kubernetes", "urllib3", "botocore", "boto3")

_cr: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar("snapmover_cr", default=None)
T = TypeVar("T")


def rfc3339(created: float) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC, milliseconds)."""
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def reconciling(func: Callable[[str, str], T], namespace: str, kind: str, name: str) -> T:
    """Call ``func(kind, name)`` with the CR as the logging context of this thread."""
    token = _cr.set((kind, namespace, name))
    try:
        return func(kind, name)
    finally:
        _cr.reset(token)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        cr = _cr.get()
        where = f" [{cr[0]} {cr[1]}/{cr[2]}]" if cr else ""
        line = f"{rfc3339(record.created)} {record.levelname} {record.name}{where} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, str] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        cr = _cr.get()
        if cr:
            fields.update(kind=cr[0], namespace=cr[1], name=cr[2])
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return json.dumps(fields, sort_keys=True)


def chosen(flag: str | None, configured: str) -> str:
    """The format in force: ``--log-format`` wins over the ConfigMap's ``logFormat``."""
    return flag or configured


def setup(fmt: str) -> None:
    """Log INFO and above to stderr in ``fmt`` (text or json), replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
