"""Logging set-up for the supervisor and its children: text or JSON lines on
stderr. Run fields (workflow, run id, attempt, step) added by
``redflow_mp.logs`` appear in both formats; Redis URLs are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from redflow_mp.logs import RUN_FIELDS, RunContextFilter

__all__ = ["configure_logging", "mask_secrets"]

# Every scheme we connect to (redis, rediss, redis+sentinel, rediss+sentinel, unix),
# and every query option whose name ends in "password" (ssl_password too), as
# redflow_mp.connection.mask_url masks them.
# The password runs to the last "@" of the URL (a password may hold "@" or "/").
_URL_PASSWORD = re.compile(r"((?:rediss?|rediss?\+sentinel|unix)://[^:/@\s]*:)(\S+)(@)")
_QUERY_PASSWORD = re.compile(r"([?&][a-z_]*password=)([^&\s]+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Mask passwords in any Redis URL inside ``text``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = [
            f"{k}={getattr(record, k)}"
            for k in RUN_FIELDS
            if k != "pid" and getattr(record, k, "") not in ("", None)
        ]
        if fields:
            base += " [" + " ".join(fields) + "]"
        return mask_secrets(base)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": mask_secrets(record.getMessage()),
        }
        for key in RUN_FIELDS:
            value = getattr(record, key, None)
            if value not in (None, "") and key != "pid":
                out[key] = value
        if record.exc_info:
            out["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        )
    handler.addFilter(RunContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
