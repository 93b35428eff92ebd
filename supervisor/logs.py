"""Logging set-up for the supervisor and its children: text or JSON lines on
stderr. Run fields (workflow, run id, attempt, step) added by
``redflow_mp.logs`` appear in both formats; Redis URLs are masked.

Invariant: one record is one line, whatever run data it carries. Error messages,
step and workflow names come from user code (and through it from users), so in
the text format every control character (newline, carriage return, ANSI escape,
C1 controls) and bidi override of the message and the run fields is written as
an escape (``\\n``, ``\\x1b``): no line can be forged, no terminal recoloured.
A traceback follows on its own lines, each indented by two spaces, so none of
them can pass for a record either. JSON lines get this from ``json.dumps``.

Lines are written without blocking (``logsink.py``): a reader of stderr that
stops reading never stops the supervision loop; :func:`flush_logs` writes what
waited.
"""

from __future__ import annotations

import json
import logging
import re
import time

from redflow_mp.logs import RUN_FIELDS, RunContextFilter
from redflow_mp.urls import mask_secrets

from .logsink import NonBlockingStderr

__all__ = ["configure_logging", "escape_controls", "flush_logs", "mask_secrets"]

# C0 and C1 controls, DEL, line/paragraph separators and the bidi controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control and bidi character written as an escape."""
    return _CONTROL.sub(_escape_char, text)


def _indented(text: str) -> str:
    """A multi-line tail (traceback, stack) under its record: controls escaped in
    each line, each line indented, so none can pass for a record of its own."""
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the message escaped and the tail indented.
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        base = self.formatMessage(record)
        fields = [
            f"{k}={getattr(record, k)}"
            for k in RUN_FIELDS
            if k != "pid" and getattr(record, k, "") not in ("", None)
        ]
        if fields:
            base += " [" + " ".join(fields) + "]"
        tail = []
        if record.exc_info:
            tail.append(self.formatException(record.exc_info))
        elif record.exc_text:
            tail.append(record.exc_text)
        if record.stack_info:
            tail.append(self.formatStack(record.stack_info))
        lines = [escape_controls(base), *(_indented(t.rstrip("\n")) for t in tail)]
        return mask_secrets("\n".join(lines))


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
        elif record.exc_text:  # a traceback given as text (logs.log_error_with_traceback)
            out["exc"] = mask_secrets(record.exc_text)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = NonBlockingStderr(2)
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


def flush_logs() -> bool:
    """Write the log lines that waited for stderr's reader (the arbiter calls this
    at each turn of its loop); True while some still wait."""
    waiting = False
    for handler in logging.getLogger().handlers:
        if isinstance(handler, NonBlockingStderr):
            handler.flush()
            waiting = waiting or handler.pending > 0
    return waiting
