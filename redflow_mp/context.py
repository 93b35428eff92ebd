"""The context a handler receives: validated input, steps, run info, cancellation.

A :class:`Context` lives for one execution of one run (the executor may use
the object again for a later run only once nothing refers to it:
``executor._unshared``; a context a handler kept keeps its run's data).
``ctx.cancelled`` is a ``threading.Event`` the heartbeat sets when cancellation
is requested (or the lease is lost); ``ctx.raise_if_cancelled()`` turns it into
:class:`RunCanceledError`. For ``async def`` handlers ``ctx.step`` has the same
methods, awaitable.

The run being executed is also in a ContextVar (``logs.current_run``), for
logging only.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Generic, TypeVar

from .codec import ErrorInfo, RunInfo
from .errors import LeaseLostError, RunCanceledError
from .steps import AsyncStep, Step

if TYPE_CHECKING:
    from .execution import RunFacts

__all__ = ["AsyncContext", "Context", "FailureContext", "RunInfo"]

T = TypeVar("T")


class Context(Generic[T]):
    """What a handler gets: ``input``, ``step``, ``run``, ``cancelled``, ``logger``.

    ``run`` and ``logger`` may come from ``facts`` (the executor's
    :class:`~redflow_mp.execution.RunFacts`) instead: then each is built when the
    handler first reads it."""

    __slots__ = ("_facts", "_logger", "_lost", "_reason", "_run", "cancelled", "input", "step")

    def __init__(
        self,
        input: T,
        step: Step,
        run: RunInfo | None,
        cancelled: threading.Event,
        logger: logging.LoggerAdapter[logging.Logger] | None,
        lost: threading.Event | None = None,
        *,
        facts: RunFacts | None = None,
    ) -> None:
        if facts is None and (run is None or logger is None):
            raise TypeError("Context needs run and logger, or facts")
        self.input = input
        self.step = step
        self._run = run
        self.cancelled = cancelled
        self._logger = logger
        self._facts = facts
        self._lost = lost if lost is not None else threading.Event()
        self._reason: str | None = None

    @property
    def run(self) -> RunInfo:
        """Facts about the run being executed."""
        run = self._run
        if run is None:
            run = self._run = self._facts.info  # type: ignore[union-attr]
        return run

    @run.setter
    def run(self, run: RunInfo) -> None:
        self._run = run

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the run's workflow, id, attempt and step."""
        logger = self._logger
        if logger is None:
            logger = self._logger = self._facts.logger  # type: ignore[union-attr]
        return logger

    @logger.setter
    def logger(self, logger: logging.LoggerAdapter[logging.Logger]) -> None:
        self._logger = logger

    @property
    def _lease_lost(self) -> bool:
        """Set with ``cancelled`` when the lease is gone (another worker owns the run)."""
        return self._lost.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`RunCanceledError` if cancellation was requested."""
        if self.cancelled.is_set():
            if self._lease_lost:
                raise LeaseLostError(f"run {self.run.id}: lease lost; stopping this execution")
            raise RunCanceledError(self.run.id, reason=self._reason)

    def __repr__(self) -> str:
        return f"<Context run={self.run.id} workflow={self.run.workflow!r}>"


class AsyncContext(Context[T]):
    """The context of an ``async def`` handler: ``ctx.step`` methods are awaitable."""

    __slots__ = ()
    step: AsyncStep  # type: ignore[assignment]


class FailureContext(Generic[T]):
    """What ``on_failure`` gets once a run has failed for good."""

    __slots__ = ("error", "input", "logger", "run")

    def __init__(
        self,
        input: T,
        run: RunInfo,
        error: ErrorInfo,
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.input = input
        self.run = run
        self.error = error
        self.logger = logger

    def __repr__(self) -> str:
        return f"<FailureContext run={self.run.id} error={self.error.type}>"
