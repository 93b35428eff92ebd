"""The state of one execution of one run, shared by its context and its steps.

An :class:`Execution` knows the run (id, attempt, lease token, recorded steps),
tells whether the lease was lost or cancellation requested, and performs the
run's fenced writes: step records and lease confirmations, each riding out
transient Redis trouble (a brief outage costs a pause, not an attempt).

Invariant: every write carries the lease token; a write refused for a lost
lease marks the execution lost, and nothing else is written for it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

from . import codec
from .codec import ErrorInfo, RunInfo, RunState, StoredStep
from .errors import TRANSIENT_ERRORS, LeaseLostError, RunCanceledError
from .flags import LazyEvent
from .hashpages import BytePages
from .logs import RunLoggerAdapter, current_step, run_logger
from .metrics import Metrics
from .options import is_text
from .outage import Outage
from .retry import is_retryable
from .runs import Runs
from .scripts import Claimed
from .urls import mask_secrets

__all__ = ["Execution", "RunFacts", "error_info"]

_TRACEBACK_LIMIT = 16_000
# A succeeded step record as write_step.lua / consume_event.lua store it
_SUCCEEDED = re.compile(rb'\{"seq":\d+,"status":"succeeded"')

T = TypeVar("T")


def error_info(exc: BaseException, *, retryable: bool | None = None) -> ErrorInfo:
    """Describe an exception for storage (type, message, retryable, traceback).

    Never raises for what user code raised: an exception whose ``str()`` fails is
    described as the traceback module does, and text that is not valid Unicode (a
    lone surrogate, e.g. a non-UTF-8 file name in the message) is stored with
    backslash escapes; either used to end the worker, leaving the run ``running``."""
    # A Redis URL's password in them (a handler that could not reach a Redis) is
    # masked, as in the supervisor's logs: the record is shown to whoever may read runs.
    # Masked before the cut: a URL cut inside its password is no longer recognised.
    tb = mask_secrets("".join(traceback.format_exception(exc)))
    if len(tb) > _TRACEBACK_LIMIT:
        tb = tb[-_TRACEBACK_LIMIT:]
    try:
        message = mask_secrets(str(exc))[:4000]
    except Exception:
        message = "<exception str() failed>"
    return ErrorInfo(
        type=type(exc).__name__,
        message=_storable(message),
        retryable=is_retryable(exc) if retryable is None else retryable,
        traceback=_storable(tb),
    )


def _storable(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates become ``\\udcXX`` escapes."""
    if is_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RunFacts:
    """A run's :class:`RunInfo` (``ctx.run``) and its logger adapter
    (``ctx.logger``), each built from the claimed run on first use and kept: a
    handler that reads neither (a no-op, most runs' executor path) makes neither.
    ``pid``: the worker's process, a field of the adapter's records."""

    __slots__ = ("_info", "_logger", "_run", "pid")

    def __init__(
        self,
        run: Claimed | RunState,
        pid: int,
        logger: RunLoggerAdapter | None = None,
    ) -> None:
        self._run = run
        self.pid = pid
        self._info: RunInfo | None = None
        self._logger = logger

    @property
    def info(self) -> RunInfo:
        info = self._info
        if info is None:
            run = self._run
            info = self._info = RunInfo(
                id=run.id,
                workflow=run.workflow,
                queue=run.queue,
                attempt=run.attempt,
                max_attempts=run.max_attempts,
                created_at=run.created_at,
                parent_run_id=run.parent_run_id,
                cron_id=run.cron_id,
            )
        return info

    @property
    def logger(self) -> RunLoggerAdapter:
        logger = self._logger
        if logger is None:
            run = self._run
            logger = self._logger = run_logger(
                "redflow_mp.run",
                workflow=run.workflow,
                run_id=run.id,
                attempt=run.attempt,
                pid=self.pid,
            )
        return logger

    @logger.setter
    def logger(self, logger: RunLoggerAdapter) -> None:
        self._logger = logger


class Execution(RunFacts):
    """State of one execution of one run, shared by the context and its steps.

    Also the run's :class:`RunFacts`: ``info`` and ``logger`` are built on first use."""

    __slots__ = (
        "attempt",
        "cancel_reason",
        "cancelled",
        "fresh",
        "gave_up",
        "hits",
        "inflight",
        "lease_lost",
        "lease_ms",
        "lease_until",
        "lost",
        "metrics",
        "prior",
        "run_id",
        "runs",
        "seen",
        "steps_cache",
        "suspending",
        "token",
        "waits",
        "workflow",
    )

    def __init__(
        self,
        runs: Runs,
        claimed: Claimed,
        lease_ms: int,
        logger: RunLoggerAdapter | None = None,
        metrics: Metrics | None = None,
        pid: int | None = None,
    ) -> None:
        # A process the handler forks must not write for the run. ``pid``: this
        # process's, read by the caller already (os.getpid is a system call).
        # ``logger``: None makes the run's adapter on first use (RunFacts).
        self._run = claimed
        self.pid = os.getpid() if pid is None else pid
        self._info = None
        self._logger = logger
        self.runs = runs
        self.workflow = claimed.workflow
        self.metrics = metrics
        self.run_id = claimed.id
        self.token = claimed.token
        self.attempt = claimed.attempt
        self.lease_ms = lease_ms
        self.steps_cache = claimed.steps
        self.seen: set[str] = set()
        # Progress (max_run_crashes): the succeeded steps this execution replayed
        # (hits) and recorded (fresh); those recorded before it began (prior,
        # counted on first use; -1 until then). See made_progress.
        self.hits = 0
        self.fresh = 0
        self.prior = -1
        # Lazy: made per run, almost never set or waited on (see flags.py).
        self.cancelled: threading.Event = LazyEvent()
        self.lost: threading.Event = LazyEvent()  # the lease is gone (the context reads it)
        self.cancel_reason: str | None = None
        self.lease_lost = False
        # The Redis trouble a write of this execution gave up on (durable): then
        # whatever the handler raises is that trouble's doing, not the run's.
        self.gave_up: BaseException | None = None
        self.lease_until = claimed.lease_until
        # Durable waits whose condition did not hold (waits.PendingWait), and
        # whether the run suspends: then no further step may start.
        self.waits: list[Any] = []
        self.suspending = False
        # Async steps whose function is running (a future done once the step's
        # outcome is recorded -> the task running it): a suspension waits for them.
        self.inflight: dict[Any, Any] = {}

    def reuse(self, claimed: Claimed, pid: int) -> None:
        """Ready this execution for ``claimed`` as ``__init__`` leaves a new one
        (same runs, lease and metrics). Only for an execution nothing but the
        executor refers to any more (``executor._unshared``): its earlier run's
        facts, steps, waits and events are no one's to see. A set event or a
        container in use is replaced, not cleared."""
        self._run = claimed
        self.pid = pid
        self._info = None
        self._logger = None
        self.workflow = claimed.workflow
        self.run_id = claimed.id
        self.token = claimed.token
        self.attempt = claimed.attempt
        self.steps_cache = claimed.steps
        self.hits = 0
        self.fresh = 0
        self.prior = -1
        if self.seen:
            self.seen = set()
        # is_set()'s own read (threading.Event.is_set returns _flag, which every
        # Event has, a LazyEvent by its class), without its Python call: two a run
        if self.cancelled._flag:  # type: ignore[attr-defined]
            self.cancelled = LazyEvent()
        if self.lost._flag:  # type: ignore[attr-defined]
            self.lost = LazyEvent()
        self.cancel_reason = None
        self.lease_lost = False
        self.gave_up = None
        self.lease_until = claimed.lease_until
        if self.waits:
            self.waits = []
        self.suspending = False
        if self.inflight:
            self.inflight = {}

    def mark_lost(self) -> None:
        self.lease_lost = True
        self.lost.set()
        self.cancelled.set()

    def mark_cancel(self) -> None:
        self.cancelled.set()

    def check_cancelled(self) -> None:
        if self.lease_lost:
            raise LeaseLostError(f"run {self.run_id}: lease lost; stopping this execution")
        if self.cancelled.is_set():
            raise RunCanceledError(self.run_id, reason=self.cancel_reason)

    def set_step(self, name: str | None) -> None:
        """Name the step being executed (for log records), or clear it."""
        self.logger.set_step(name)
        current_step.set(name or "")

    def record_step(self, status: str, started_ms: int) -> None:
        if self.metrics is not None:
            self.metrics.inc("redflow_steps_total", workflow=self.workflow, status=status)
            self.metrics.observe(
                "redflow_step_duration_seconds",
                max(0.0, time.time() - started_ms / 1000.0),
                workflow=self.workflow,
            )

    def durable(self, fn: Callable[[], T], what: str) -> T:
        """Call ``fn``, riding out transient Redis trouble (unreachable, out of memory).

        Retries with backoff for up to ``max(10 s, 3 leases)``, or until the lease
        is lost; a brief outage then costs a pause, not an attempt of the run. A
        longer one raises the error into the handler, and the execution is put
        back (``gave_up``: the executor's ``DEFER``), not charged as an attempt.
        """
        if os.getpid() != self.pid:
            # A process the handler forked (inside a step function, say) that
            # left its branch by an exception: it would record the step's outcome
            # with the run's lease while the handler goes on in the worker.
            forked_escape(self.run_id, 1)
        deadline = time.monotonic() + max(10.0, 3 * self.lease_ms / 1000.0)
        delay = 0.05
        outage = Outage(self.logger, what)
        while True:
            try:
                done = fn()
                outage.recovered()
                return done
            except LeaseLostError as exc:
                # A fenced write found the run's record damaged (wait_scripts.corrupted)
                # and failed the run: nothing more may be written for it.
                self.mark_lost()
                self.logger.error("%s", exc)
                raise
            except TRANSIENT_ERRORS as exc:
                if self.lease_lost:
                    raise
                if time.monotonic() >= deadline:
                    self.gave_up = exc
                    raise
                outage.failed(exc, delay)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def renewed(self, sent: float) -> None:
        """A renewal sent at ``sent`` (monotonic) succeeded: the lease holds until
        at least ``sent + lease``. Called from the heartbeat thread too."""
        self.lease_until = max(self.lease_until, sent + self.lease_ms / 1000.0)

    def confirm_lease(self) -> None:
        """Before the handler starts and before a step executes: prove the lease
        is still ours.

        Free while the lease was confirmed lately. Otherwise this process was
        paused, starved or cut off since (SIGSTOP, a claim reply that came late,
        a heartbeat that could not run): one fenced renewal proves the lease, or
        the execution stops here, before the step's side effects.
        """
        if time.monotonic() < self.lease_until - self.lease_ms / 3000.0:
            return
        sent = time.monotonic()
        [(held, cancel)] = self.durable(
            lambda: self.runs.renew(self.lease_ms, [(self.run_id, self.token)]),
            "confirming the lease",
        )
        if not held:
            self.mark_lost()
            raise LeaseLostError(
                f"run {self.run_id}: lease lost while this worker was paused or cut off"
            )
        self.renewed(sent)
        if cancel:
            self.mark_cancel()

    def load_steps(self, expected: int, size: int = 0) -> None:
        """Read the run's step records by HSCAN pages of about 1,000 records or
        1 MiB (:class:`~redflow_mp.hashpages.BytePages`: ``size``, the run's
        ``stepBytes`` or 0 when unknown, sets the first page; the next follow the
        bytes that came): the claim sent only their count (``expected``), there
        being too many or too big for one bounded call. Each page rides out
        transient Redis trouble like a write; the lease is held (the heartbeat
        renews it) while they come."""
        # (A stepBytes of 10**15 made a call per record, a million for a million
        # steps; 0 or missing, 1,000 records a call: 48 of 8 MiB in one 384 MB reply.)
        pages = BytePages(expected, size)
        shard = self.runs.shard_of_run(self.run_id)
        key = shard.keys.run_steps(self.run_id)
        cache = self.steps_cache
        cache.clear()

        def page_at(cursor: int) -> tuple[int, dict[bytes, bytes]]:
            count = pages.count
            found = self.durable(
                lambda: shard.redis.hscan(key, cursor, count=count), "reading the run's steps"
            )
            return int(found[0]), cast(dict[bytes, bytes], found[1])

        cursor = 0
        while True:
            cursor, page = page_at(cursor)
            for name, data in page.items():
                cache[name.decode("utf-8", "replace")] = data
            if not cursor:
                break
            pages.took(page)
        self.logger.debug("read %d step records of %d expected by pages", len(cache), expected)

    def made_progress(self) -> bool:
        """Whether a step this execution completes now is progress, which clears
        the run's crash count (max_run_crashes): only once it has replayed as
        many succeeded steps as were recorded before it began. A handler that
        names its steps anew at each execution (a timestamp in the name) and
        then kills its worker "completed a step" each time, and looped for ever."""
        if self.prior < 0:
            done = sum(1 for data in self.steps_cache.values() if _SUCCEEDED.match(data))
            self.prior = max(0, done - self.fresh)
        return self.hits >= self.prior

    def write_step(self, name: str, record: StoredStep) -> None:
        data = codec.encode_step(record)
        sent = [0.0]
        succeeded = record.status == "succeeded"
        progress = succeeded and self.made_progress()

        def call() -> tuple[bool, bool]:
            sent[0] = time.monotonic()
            return self.runs.scripts_for(self.run_id).write_step(
                self.run_id, self.token, name, data, self.lease_ms, progress=progress
            )

        held, cancel = self.durable(call, f"recording step {name!r}")
        if held:
            self.renewed(sent[0])
        if not held:
            self.mark_lost()
            raise LeaseLostError(f"run {self.run_id}: lease lost while recording step {name!r}")
        self.steps_cache[name] = data
        if succeeded:
            self.fresh += 1
        if cancel:
            self.mark_cancel()

    def error_info(self, exc: BaseException) -> ErrorInfo:
        return error_info(exc)


def forked_escape(run_id: str, code: int) -> NoReturn:
    """End a process forked by the handler of ``run_id`` that left the handler
    (or, inside a step function, reached a write for the run): it would otherwise
    write for the run with its lease and go on serving as a second worker."""
    try:
        logging.getLogger("redflow_mp.executor").error(
            "a process (pid %d) forked by the handler of run %s left the handler %s; "
            "it exits with status %d instead of going on as the worker",
            os.getpid(),
            run_id,
            "by an exception" if code else "by returning",
            code,
        )
    finally:
        os._exit(code)
