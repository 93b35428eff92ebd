"""Run-aware logging: every line logged for a run carries its workflow, run id,
attempt and current step, as ``extra`` fields (``record.workflow`` ...), so text
and JSON formatters can both show them.

Owns the two context variables that say what this thread or task is executing
(:data:`current_run`, :data:`current_step`); the executor sets them, and only
logging reads them.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = [
    "RUN_FIELDS",
    "RunContextFilter",
    "RunFields",
    "RunLoggerAdapter",
    "current_run",
    "current_step",
    "log_error_with_traceback",
    "run_logger",
]

RUN_FIELDS = ("workflow", "run_id", "attempt", "step", "pid")

# Loggers by name: logging.getLogger takes a global lock on every call, and a
# worker makes one adapter per run. Loggers live forever, so caching is safe.
_loggers: dict[str, logging.Logger] = {}


class RunFields(Protocol):
    """What a record is given of the run being executed (a ``RunInfo``, or the
    executor's claimed run: no ``RunInfo`` is made for a handler that never asks)."""

    @property
    def id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def attempt(self) -> int: ...


# The run being executed in this thread/task (None outside a handler).
current_run: ContextVar[RunFields | None] = ContextVar("redflow_current_run", default=None)

# The step being executed in this thread/task ("" between steps).
current_step: ContextVar[str] = ContextVar("redflow_current_step", default="")


class RunLoggerAdapter(logging.LoggerAdapter[logging.Logger]):
    """Merges the run's fields into each record; ``extra`` given per call wins."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        merged = dict(self.extra or {})
        given = kwargs.get("extra")
        if given:
            merged.update(given)
        kwargs["extra"] = merged
        return msg, kwargs

    def set_step(self, step: str | None) -> None:
        if isinstance(self.extra, dict):
            self.extra["step"] = step or ""


def run_logger(
    name: str, *, workflow: str, run_id: str, attempt: int, pid: int
) -> RunLoggerAdapter:
    """A logger adapter for one execution of one run."""
    base = _loggers.get(name)
    if base is None:
        base = _loggers[name] = logging.getLogger(name)
    return RunLoggerAdapter(
        base,
        {"workflow": workflow, "run_id": run_id, "attempt": attempt, "step": "", "pid": pid},
    )


def log_error_with_traceback(
    logger: logging.Logger | logging.LoggerAdapter[Any], traceback_text: str, msg: str, *args: Any
) -> None:
    """``logger.error(msg, *args)`` with ``traceback_text`` as the record's
    exception text (``exc_text``: what every formatter prints under the message
    in place of formatting ``exc_info``). For a traceback already made safe to
    show (Redis passwords masked: ``execution.error_info``): with ``exc_info``, the
    application's own handlers would format the exception as it is."""
    base = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
    if not base.isEnabledFor(logging.ERROR):
        return
    kwargs: MutableMapping[str, Any] = {}
    if isinstance(logger, logging.LoggerAdapter):
        msg, kwargs = logger.process(msg, kwargs)
    try:
        fn, lno, func, _ = base.findCaller(False, 2)
    except ValueError:  # no Python caller
        fn, lno, func = "(unknown file)", 0, "(unknown function)"
    record = base.makeRecord(
        base.name, logging.ERROR, fn, lno, msg, args, None, func, kwargs.get("extra")
    )
    record.exc_text = traceback_text
    base.handle(record)


class RunContextFilter(logging.Filter):
    """Adds workflow, run id, attempt and step to every record logged while a run
    executes (also records from plain ``logging.getLogger`` calls in handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        run = current_run.get()
        if run is not None:
            if not getattr(record, "run_id", ""):
                record.workflow = run.workflow
                record.run_id = run.id
                record.attempt = run.attempt
            if not getattr(record, "step", ""):
                record.step = current_step.get()
        return True
