"""Execute one claimed run: validate input, call the handler, decide the outcome.

:meth:`Executor.execute` never writes the run's final state itself: it returns
an :class:`Outcome` (succeeded / failed / canceled / retry, or ``lost`` when the
lease was taken over and nothing may be written), and the worker applies it
fenced by the lease token, usually in the same script call that claims the
next run. Step writes during the handler are fenced the same way.

Outcome rules (SPEC §4): unknown workflow, unreadable or invalid input, output
that cannot be encoded, :class:`NonRetriableError` and cancellation are final;
any other exception is retried with backoff while attempts remain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from weakref import getweakrefcount

import msgspec

from . import codec, hookdue, procid, tracing
from .codec import ErrorInfo, RunInfo, RunWait, encode_error
from .context import AsyncContext, Context, FailureContext
from .errors import (
    InputValidationError,
    LeaseLostError,
    NonRetriableError,
    OutputSerializationError,
    RedflowError,
    RunCanceledError,
    UnknownWorkflowError,
)
from .execution import Execution, RunFacts, error_info, forked_escape
from .lease import LeaseKeeper
from .logs import RunLoggerAdapter, current_run, log_error_with_traceback
from .metrics import Metrics
from .outage import Outage
from .registry import Registry, Workflow
from .results import WAIT_TROUBLE, passes
from .retry import retry_delay_ms
from .runs import Runs, encode_payload
from .scripts import Claimed, Finish
from .steps import AsyncStep, Step
from .tracing import _tracing
from .waits import merge_waits

__all__ = ["Executor", "Outcome", "OutcomeMode", "finish_args", "on_failure_of_stored_run"]

log = logging.getLogger(__name__)


class OutcomeMode(enum.StrEnum):
    """How an execution ended. ``LOST``: the lease was taken over; nothing may be
    written. The others name the finish the worker writes (``Finish.mode``);
    ``DEFER`` puts the run back without spending an attempt (Redis trouble
    outlasted a write's ride-out: ``Execution.gave_up``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    RETRY = "retry"
    DEFER = "defer"
    LOST = "lost"
    SUSPEND = "suspend"  # a durable wait: the worker sends suspend_run


class Outcome(msgspec.Struct, gc=False):
    """How an execution ended, with what its finish and ``on_failure`` need.

    ``facts``: the run's info and logger, built when first read (``info`` and
    ``logger``; None for an outcome of no execution, e.g. a run put back).

    A msgspec Struct: its ``__init__`` is C code (a slots dataclass's is Python,
    eight assignments a run). ``gc=False``: nothing an Outcome holds can refer
    back to it (it is never handed to user code), so the collector skips it."""

    mode: OutcomeMode
    payload: bytes = b""
    delay_ms: int = 0
    error: ErrorInfo | None = None
    workflow: Workflow[Any, Any] | None = None
    input: Any = None
    facts: RunFacts | None = None
    wait: RunWait | None = None  # SUSPEND: what the run waits for

    @property
    def info(self) -> RunInfo | None:
        facts = self.facts
        return None if facts is None else facts.info

    @property
    def logger(self) -> RunLoggerAdapter | None:
        facts = self.facts
        return None if facts is None else facts.logger


# The members the hot path reads, as module globals: in Python 3.11 reading an
# attribute of an Enum class goes through the hook of EnumType.__getattr__
# (about 850 CPU instructions a read, against a few dozen for a global).
_SUCCEEDED = OutcomeMode.SUCCEEDED
_FAILED = OutcomeMode.FAILED
_LOST = OutcomeMode.LOST


class _NoWaitExecutor(concurrent.futures.ThreadPoolExecutor):
    """Default executor of handler event loops: closing the loop does not wait.

    ``asyncio.Runner.close`` joins the loop's default executor. A handler's own
    ``asyncio.to_thread`` call that timed out may still be blocked in that
    executor, possibly forever; waiting for it would hang the worker's shutdown.
    (A sync step with a ``timeout`` runs in a thread of its own, not here: see
    ``step_calls._in_own_thread``.)
    """

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)


#: How long ``on_failure_of_stored_run`` rides out Redis trouble reading the run.
STORED_RUN_PATIENCE = 60.0

#: How long a run put back for Redis trouble (``OutcomeMode.DEFER``) waits.
TROUBLE_DEFER_MS = 1000

#: How long the tasks a finished async handler left behind get to end once
#: cancelled (their ``finally`` blocks); past it their loop is dropped.
LEFTOVER_GRACE = 5.0


async def _alone(coro: Any, stuck: list[asyncio.Task[Any]]) -> Any:
    """Await a handler; then cancel the tasks it left behind (the siblings of a
    gather that suspended or failed), so none runs on in the reused loop. Those
    still running :data:`LEFTOVER_GRACE` seconds later ignored their
    cancellation (a loop catching ``CancelledError``): waiting for them held the
    run's outcome, and the worker, forever. They go into ``stuck``."""
    try:
        return await coro
    finally:
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for task in left:
            task.cancel()
        if left:
            done, pending = await asyncio.wait(left, timeout=LEFTOVER_GRACE)
            for task in done:  # retrieved: no "exception was never retrieved"
                if not task.cancelled():
                    task.exception()
            stuck.extend(pending)


def _runner() -> asyncio.Runner:
    runner = asyncio.Runner()
    runner.get_loop().set_default_executor(_NoWaitExecutor(thread_name_prefix="redflow-step"))
    return runner


class Executor:
    """Runs handlers for one worker; holds the asyncio runner of its loop thread."""

    def __init__(
        self,
        runs: Runs,
        registry: Registry,
        keeper: LeaseKeeper,
        lease_ms: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.runs = runs
        self.registry = registry
        self.metrics = metrics
        self.keeper = keeper
        self.lease_ms = lease_ms
        # One reusable event loop for async handlers, owned by the thread that
        # executes first (the worker loop). Other threads get a loop per run,
        # closed at once: a loop left in a dead pool thread would never be
        # closed (ResourceWarning, leaked fds).
        self._runner: asyncio.Runner | None = None
        self._home: int | None = None
        self._pid = procid.refresh()  # and procid.pid, read by _call
        # The last plain execution's objects, when nothing else refers to them
        # (``_unshared``): the next one's, made ready (``Execution.reuse``).
        self._spare: tuple[Execution, Context[Any], Step] | None = None

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def _run_async(self, coro: Any) -> Any:
        me = threading.get_ident()
        if self._home is None:
            self._home = me
        if me != self._home:
            with _runner() as temporary:
                return temporary.run(coro)
        if self._runner is None:
            self._runner = _runner()
        stuck: list[asyncio.Task[Any]] = []
        try:
            return self._runner.run(_alone(coro, stuck))
        finally:
            if stuck:
                self._drop_loop(stuck)

    def _drop_loop(self, stuck: list[asyncio.Task[Any]]) -> None:
        """Close the reused loop without running ``stuck`` again (closing the
        runner would wait for them once more); the next async handler gets a
        new loop."""
        log.warning(
            "%d task(s) an async handler left behind ignored its cancellation for %g s "
            "(%s); they are dropped with their event loop",
            len(stuck),
            LEFTOVER_GRACE,
            ", ".join(sorted(t.get_name() for t in stuck)),
        )
        runner, self._runner = self._runner, None
        if runner is not None:
            loop = runner.get_loop()
            asyncio.set_event_loop(None)
            loop.close()

    @tracing.traced_execution  # a span per execution, with the OpenTelemetry extra
    def execute(self, claimed: Claimed) -> Outcome:
        """Execute ``claimed`` and return its outcome (nothing final is written here)."""
        wf = self.registry.get(claimed.workflow)
        if wf is None:
            unknown = UnknownWorkflowError(
                f"workflow {claimed.workflow!r} is not registered in this worker "
                f"(queue {claimed.queue!r})"
            )
            facts = RunFacts(claimed, self._pid)
            return Outcome(OutcomeMode.FAILED, error=error_info(unknown), facts=facts)
        # The execution is the run's facts: its info and logger are made on first use.
        me = procid.pid  # the worker's process (no system call; _handler asks the OS)
        ex = Execution(self.runs, claimed, self.lease_ms, None, self.metrics, me)
        outcome = Outcome(_FAILED, workflow=wf, facts=ex)
        try:
            raw_input = codec.decode_json(claimed.input_json)
        except codec.NestingDecodeError as exc:
            outcome.error = error_info(InputValidationError(f"run input cannot be read: {exc}"))
            return outcome
        except msgspec.DecodeError as exc:
            err = InputValidationError(f"run input is not valid JSON: {exc}")
            outcome.error = error_info(err)
            return outcome
        outcome.input = raw_input
        if wf.schema is not None:
            try:
                value = msgspec.convert(raw_input, wf.schema)
            except (msgspec.ValidationError, TypeError) as exc:
                err = InputValidationError(f"input does not match the schema of {wf.name!r}: {exc}")
                outcome.error = error_info(err)
                return outcome
            outcome.input = value
        return self._call(wf, claimed, ex, outcome)

    def execute_plain(self, claimed: Claimed, wf: Workflow[Any, Any] | None) -> Outcome:
        """:meth:`execute` of ``claimed`` (``wf``: its workflow here, or None), the
        steady state's common case in one frame: a sync handler, no tracer
        provider set (``tracing._tracing``, the wrapper's own check), its input
        read, no step records to read by pages. The same calls in the same order
        as ``execute`` -> ``_call`` -> ``_handler`` -> ``_success``, without the
        frames of the wrapper, of those four and a second registry lookup; and the
        execution, context and step of the last run that succeeded are used again
        when nothing else refers to them (``_unshared``, ``Execution.reuse``).
        Every other case is :meth:`execute` (``benchmarks.child_instr``)."""
        if wf is None or wf.is_async or claimed.steps_unread or _tracing() is not None:
            return self.execute(claimed)  # (a tracer provider set: its span, as ever)
        try:
            value = codec.decode_json(claimed.input_json)
            if wf.schema is not None:
                value = msgspec.convert(value, wf.schema)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            return self.execute(claimed)  # its outcome says why (nothing ran yet)
        me = procid.pid  # as execute
        ex, ctx, step = self._objects(claimed, value, me)
        outcome = Outcome(_FAILED, workflow=wf, input=value, facts=ex)
        self.keeper.hold(claimed.id, claimed.token, ex.mark_lost, ex.mark_cancel, ex.renewed)
        token = current_run.set(claimed)
        try:
            ex.confirm_lease()
            result = wf.handler(ctx)  # as _handler: the fork guard on both ways out
            if type(result) not in _NOT_COROUTINES and asyncio.iscoroutine(result):
                result = self._run_async(result)
        except BaseException as exc:
            self._raised(ex, wf, claimed, exc, outcome, me)  # the fork guard first
        else:
            if os.getpid() != me:
                forked_escape(claimed.id, 0)
            if ex.lease_lost:
                outcome.mode = _LOST
            elif result is None:  # as _success
                outcome.payload = b"null"
                outcome.mode = _SUCCEEDED
            else:
                self._success(result, outcome)
        finally:
            current_run.reset(token)
            self.keeper.release(claimed.id)
        if ex.suspending or outcome.mode is not _SUCCEEDED:
            _suspension(ex, outcome)
            _log_failure(ex, claimed, outcome)
        elif _REUSE and _unshared(ex, ctx, step):
            self._spare = (ex, ctx, step)  # the next execute_plain's
        return outcome

    def _objects(
        self, claimed: Claimed, value: Any, me: int
    ) -> tuple[Execution, Context[Any], Step]:
        """The execution, context and step of a plain execution: new ones, or the
        last run's, which nothing else refers to (``_unshared``), made as new."""
        spare, self._spare = self._spare, None
        if spare is None:
            ex = Execution(self.runs, claimed, self.lease_ms, None, self.metrics, me)
            step = Step(ex)
            return ex, Context(value, step, None, ex.cancelled, None, ex.lost, facts=ex), step
        ex, ctx, step = spare
        ex.reuse(claimed, me)
        step._ex = ex
        ctx.input, ctx.step, ctx._run, ctx.cancelled = value, step, None, ex.cancelled
        ctx._logger, ctx._facts, ctx._lost, ctx._reason = None, ex, ex.lost, None
        return spare

    def _call(
        self, wf: Workflow[Any, Any], claimed: Claimed, ex: Execution, outcome: Outcome
    ) -> Outcome:
        me = ex.pid
        ctx: Context[Any]
        if wf.is_async:
            # AsyncContext narrows ``step`` to AsyncStep; its constructor is Context's.
            step: Step = AsyncStep(ex)  # type: ignore[assignment]
            ctx = AsyncContext(outcome.input, step, None, ex.cancelled, None, ex.lost, facts=ex)
        else:
            ctx = Context(outcome.input, Step(ex), None, ex.cancelled, None, ex.lost, facts=ex)
        self.keeper.hold(claimed.id, claimed.token, ex.mark_lost, ex.mark_cancel, ex.renewed)
        # For log records: the claimed run has the fields logs.RunContextFilter reads.
        token = current_run.set(claimed)
        try:
            if claimed.steps_unread:  # too many for the claim's reply: read by pages
                ex.load_steps(claimed.steps_unread, claimed.steps_unread_bytes)
            # A worker paused (SIGSTOP, starved) between its claim and here may have
            # lost the run to another worker: then not one line of the handler runs.
            ex.confirm_lease()
            result = self._handler(wf, ctx, claimed.id, me)
        except BaseException as exc:
            self._raised(ex, wf, claimed, exc, outcome)
        else:
            if ex.lease_lost:
                outcome.mode = OutcomeMode.LOST
            else:
                self._success(result, outcome)
        finally:
            current_run.reset(token)
            self.keeper.release(claimed.id)
        # A succeeded run that reached no wait has nothing to suspend nor to log:
        # two calls less a run (each about 1,000 CPU instructions).
        if ex.suspending or outcome.mode is not _SUCCEEDED:
            _suspension(ex, outcome)
            _log_failure(ex, claimed, outcome)
        return outcome

    def _handler(self, wf: Workflow[Any, Any], ctx: Any, run_id: str, me: int) -> Any:
        """Call the handler (awaiting a coroutine) in process ``me`` (its pid). A
        process the handler forked that comes back here (its branch raised or
        returned before its ``os._exit``) exits at once: it would otherwise write
        the run's outcome with the run's lease, then go on serving as a second,
        unsupervised worker."""
        try:
            # The handler matches ctx by construction (is_async picks the context class).
            result = wf.handler(ctx)
            # asyncio.iscoroutine is about 3,700 CPU instructions (an ABC check)
            if type(result) not in _NOT_COROUTINES and asyncio.iscoroutine(result):
                result = self._run_async(result)
        except BaseException:
            if os.getpid() != me:
                forked_escape(run_id, 1)
            raise
        if os.getpid() != me:
            forked_escape(run_id, 0)
        return result

    def _raised(
        self,
        ex: Execution,
        wf: Workflow[Any, Any],
        claimed: Claimed,
        exc: BaseException,
        outcome: Outcome,
        me: int = 0,
    ) -> None:
        """The outcome of a handler (or the checks before it) that raised ``exc``;
        ``me``: the worker's pid, when the fork guard is still to be checked."""
        if me and os.getpid() != me:
            forked_escape(claimed.id, 1)
        if isinstance(exc, RunCanceledError):
            _canceled(claimed, exc, outcome)
        elif isinstance(exc, LeaseLostError):
            outcome.mode = OutcomeMode.LOST
        elif isinstance(exc, Exception):
            if ex.lease_lost:
                outcome.mode = OutcomeMode.LOST
            elif ex.gave_up is not None:
                _defer(ex, outcome)
            else:
                self._failure(wf, claimed, exc, outcome)
        else:
            self._base_exception(ex, wf, claimed, exc, outcome)

    def _base_exception(
        self,
        ex: Execution,
        wf: Workflow[Any, Any],
        claimed: Claimed,
        exc: BaseException,
        outcome: Outcome,
    ) -> None:
        """A BaseException out of the handler: a wait's Suspend (also wrapped: a
        TaskGroup's BaseExceptionGroup) suspends the run; a CancelledError (an
        async handler that awaited a task something cancelled) fails it like any
        error of its own (it used to end the worker: in a supervisor, one child
        crash per attempt up to the crash cap); anything else, a process exit or an
        interrupt included, is raised again."""
        if ex.suspending and not isinstance(exc, KeyboardInterrupt | SystemExit):
            outcome.mode = OutcomeMode.SUSPEND
        elif isinstance(exc, asyncio.CancelledError):
            if ex.lease_lost:
                outcome.mode = OutcomeMode.LOST
            elif ex.gave_up is not None:
                _defer(ex, outcome)
            else:
                self._failure(wf, claimed, exc, outcome)
        else:
            raise exc

    def _success(self, result: Any, outcome: Outcome) -> None:
        if result is None:  # JSON's null, as the encoder writes it: no call
            outcome.payload = b"null"
            outcome.mode = _SUCCEEDED
            return
        try:
            # Runs.encode_payload's body, one Python call less a run.
            limit = self.runs.max_payload_bytes
            outcome.payload = encode_payload(result, "workflow output", limit)
            outcome.mode = _SUCCEEDED
        except TypeError as exc:
            outcome.mode = OutcomeMode.FAILED
            outcome.error = error_info(OutputSerializationError(str(exc)))
        except NonRetriableError as exc:
            outcome.mode = OutcomeMode.FAILED
            outcome.error = error_info(exc)

    def _failure(
        self, wf: Workflow[Any, Any], claimed: Claimed, exc: BaseException, outcome: Outcome
    ) -> None:
        info = error_info(exc)
        outcome.error = info
        delay = retry_delay_ms(wf.retries, claimed.attempt, claimed.max_attempts, info.retryable)
        if delay is None:
            outcome.mode = OutcomeMode.FAILED
        else:
            outcome.mode = OutcomeMode.RETRY
            outcome.delay_ms = delay

    def call_on_failure(self, outcome: Outcome) -> None:
        """Run the workflow's ``on_failure`` once; its errors are logged, never raised."""
        wf, facts = outcome.workflow, outcome.facts
        if wf is None or wf.on_failure is None or facts is None or outcome.error is None:
            return
        fctx = FailureContext(outcome.input, facts.info, outcome.error, facts.logger)
        _invoke_on_failure(wf, fctx, self._run_async)


def on_failure_of_stored_run(runs: Runs, registry: Registry, run_id: str) -> bool:
    """Call ``on_failure`` for a run that failed outside a worker's handler.

    The supervisor fails some runs itself (a run that keeps killing its worker,
    a timeout on the last attempt) and calls this in a short-lived process of
    its own, so that ``on_failure`` still runs once when a run fails for good;
    so is a hook taken over from a process that died (``hookdue.py``). Returns
    True when a hook ran; its errors are logged, never raised. The run's
    ``on-failure-due`` entry is removed once the hook returned (or none is due).
    """
    state = _stored_run(runs, run_id)
    wf = registry.get(state.workflow) if state is not None else None
    if (
        state is None
        or state.status is not codec.RunStatus.FAILED
        or state.error is None
        or wf is None
        or wf.on_failure is None
    ):
        hookdue.done(runs, run_id)
        return False
    facts = RunFacts(state, os.getpid())
    value: Any = state.input
    if wf.schema is not None:
        # On input that does not validate, the hook gets the raw input, as in a worker.
        with contextlib.suppress(msgspec.ValidationError, TypeError):
            value = msgspec.convert(state.input, wf.schema)
    fctx = FailureContext(value, facts.info, state.error, facts.logger)
    token = hookdue.started(runs, run_id)  # its deadline from now (the helper's limit)
    _invoke_on_failure(wf, fctx, asyncio.run)
    hookdue.done(runs, run_id, token)
    return True


def _stored_run(runs: Runs, run_id: str) -> codec.RunState | None:
    """The run, read riding out Redis trouble that passes (a lost connection,
    ``BUSY``...) for up to :data:`STORED_RUN_PATIENCE`: the helper that calls
    ``on_failure`` reads it once, and an error there lost the hook for good."""
    deadline = time.monotonic() + STORED_RUN_PATIENCE
    delay = 0.05
    outage = Outage(log, f"reading run {run_id}")
    while True:
        try:
            state = runs.get_run(run_id)
            outage.recovered()
            return state
        except WAIT_TROUBLE as exc:
            if not passes(exc) or time.monotonic() >= deadline:
                raise
            outage.failed(exc, delay)
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def _defer(ex: Execution, outcome: Outcome) -> None:
    """The handler raised after a write of its run gave up on Redis trouble (a
    replica that does not confirm under ``durability = "wait"`` for longer than the
    ride-out, say, after a failover): the run goes back to its queue for
    :data:`TROUBLE_DEFER_MS`, its attempt not spent, its recorded steps kept.
    Charging it (one attempt by default: a failed run) made Redis trouble the
    run's fault, which the transient-error contract rules out."""
    outcome.mode = OutcomeMode.DEFER
    outcome.delay_ms = TROUBLE_DEFER_MS
    outcome.error = None
    outcome.payload = b""
    ex.logger.warning(
        "run %s: Redis trouble outlasted the ride-out of a write (%s: %s); the run is "
        "put back for %d ms without spending an attempt",
        ex.run_id,
        type(ex.gave_up).__name__,
        ex.gave_up,
        TROUBLE_DEFER_MS,
    )


def _canceled(claimed: Claimed, exc: RunCanceledError, outcome: Outcome) -> None:
    if exc.run_id in ("", claimed.id):
        outcome.mode = OutcomeMode.CANCELED
    else:
        # Another run was canceled (a child awaited by step.run_workflow):
        # this run was not asked to stop, so it fails (never retried: the
        # child stays canceled) instead of ending "canceled" unasked.
        outcome.mode = OutcomeMode.FAILED
    outcome.error = error_info(exc, retryable=False)


def _unshared(ex: Execution, ctx: Context[Any], step: Step) -> bool:
    """Whether an execution's objects may serve the next run: no reference to the
    context, its step, the execution or its two events is left but theirs to each
    other, the caller's and this call's (a handler that kept any of them, also in
    a closure, a thread, an exception's frames or a garbage cycle, counts), each
    of those references still in place (not swapped out of the context for a
    wrapper or another event), and no weak reference to an event (the others
    take none). Then no code can reach
    them any more, nor see the next run's data through them (``sys.getrefcount``
    counts every reference; a count other than the expected one, whatever the
    cause, makes new objects for the next run)."""
    getrefcount = sys.getrefcount
    cancelled, lost = ex.cancelled, ex.lost
    return (
        # The references the counts expect are in place: a handler may have
        # swapped one out of the context (ctx.step = a wrapper of it, kept), the
        # count of its keeper's reference then standing in for the context's.
        ctx.step is step
        and ctx._facts is ex
        and step._ex is ex
        and ctx.cancelled is cancelled
        and ctx._lost is lost
        and getrefcount(ctx) == _REFS_CTX
        and getrefcount(step) == _REFS_STEP
        and getrefcount(ex) == _REFS_EX
        and getrefcount(cancelled) == _REFS_EVENT
        and getrefcount(lost) == _REFS_EVENT
        and not getweakrefcount(cancelled)
        and not getweakrefcount(lost)
    )


#: ``sys.getrefcount`` of each in ``_unshared`` when nothing else refers to it:
#: ctx: the caller's local, the argument, getrefcount's; step: ctx.step and those;
#: ex: ctx._facts, step._ex, the outcome's facts and those; an event: the
#: execution's and the context's slot, the local and getrefcount's.
_REFS_CTX = 3
_REFS_STEP = 4
_REFS_EX = 6
_REFS_EVENT = 4

#: Whether counts are exact here: CPython with the GIL, before 3.14 (whose stack
#: references may be borrowed, a count lower than the references held). Elsewhere
#: every plain run makes new objects.
_REUSE = (
    sys.implementation.name == "cpython"
    and sys.version_info < (3, 14)
    and getattr(sys, "_is_gil_enabled", lambda: True)()
)


#: Exact types a handler's result of which is never a coroutine (the common ones).
_NOT_COROUTINES = frozenset({type(None), bool, int, float, str, bytes, dict, list, tuple})


def _log_failure(facts: RunFacts, claimed: Claimed, outcome: Outcome) -> None:
    if outcome.mode in (OutcomeMode.FAILED, OutcomeMode.RETRY) and outcome.error is not None:
        facts.logger.warning(
            "run %s attempt %d %s: %s: %s",
            claimed.id,
            claimed.attempt,
            "will retry" if outcome.mode is OutcomeMode.RETRY else "failed",
            outcome.error.type,
            outcome.error.message,
        )


def _suspension(ex: Execution, outcome: Outcome) -> None:
    """The run suspends when a wait step decided so, even if user code swallowed
    the Suspend and went on: whatever it did after the wait was reached is moot."""
    if ex.suspending and ex.waits and not ex.lease_lost:
        outcome.mode = OutcomeMode.SUSPEND
        outcome.wait = merge_waits(ex.waits)
        outcome.error = None
        outcome.payload = b""
    elif outcome.mode is OutcomeMode.SUSPEND:
        outcome.mode = OutcomeMode.LOST if ex.lease_lost else OutcomeMode.FAILED
        if outcome.mode is OutcomeMode.FAILED:
            outcome.error = error_info(RuntimeError("handler suspended without a wait"))


def _invoke_on_failure(
    wf: Workflow[Any, Any], fctx: FailureContext[Any], run_async: Callable[[Any], Any]
) -> None:
    """Call the hook (awaiting it with ``run_async`` if it is a coroutine); its
    errors are logged and never change the run's outcome."""
    assert wf.on_failure is not None
    try:
        result = wf.on_failure(fctx)
        if asyncio.iscoroutine(result):
            run_async(result)
    except (Exception, asyncio.CancelledError) as exc:  # CancelledError: it ended the worker
        # The traceback with Redis passwords masked (error_info), not exc_info: the
        # application's own handlers format exc_info as it is, and a hook that could
        # not reach a Redis names its URL in its error.
        log_error_with_traceback(
            fctx.logger,
            (error_info(exc).traceback or "").rstrip("\n"),
            "on_failure of workflow %r raised; the run stays failed",
            wf.name,
        )


def finish_args(claimed: Claimed, outcome: Outcome) -> Finish:
    """The finish (``claim_run``/``finalize_run`` arguments) an outcome writes."""
    if outcome.mode is _SUCCEEDED:
        return Finish(outcome.mode, claimed.id, claimed.token, outcome.payload)
    payload = encode_error(outcome.error) if outcome.error is not None else b""
    if outcome.mode in (OutcomeMode.RETRY, OutcomeMode.DEFER):
        return Finish(outcome.mode, claimed.id, claimed.token, payload, outcome.delay_ms)
    if outcome.mode not in (OutcomeMode.FAILED, OutcomeMode.CANCELED):
        raise RedflowError(f"unexpected outcome {outcome.mode!r}")
    return Finish(outcome.mode, claimed.id, claimed.token, payload)
