"""Steps: ``ctx.step.run / run_workflow / run_workflows / emit_workflow / sleep /
sleep_until / wait_for_event``, cached by step name.

A step is recorded in ``run:<id>:steps`` as ``running`` when it starts and
with its outcome when it ends (two fenced script calls per executed step). One
that succeeded returns its cached output on a later attempt without running
again; a failed one, or one left ``running`` by a crash, runs again. The
same name twice in one execution raises :class:`DuplicateStepError`. A step's
return value is handed back as its JSON round trip, so the first execution and
a replay return equal values. A sync handler's step function may be a
coroutine function: it runs to its end in an event loop of its own.

The wait steps (``run_workflow``, ``run_workflows``, ``sleep``, ``sleep_until``,
``wait_for_event``) suspend the run when their condition does not hold, freeing
its process; see ``waits.py`` (sleeps, events) and ``childwaits.py`` (child
runs).

Cancellation is checked at every step boundary: a run asked to cancel raises
:class:`RunCanceledError` from the next ``step.*`` call.

Step timeouts: in the main thread of a process that has no other SIGALRM
user, a ``timeout`` arms ``ITIMER_REAL`` and interrupts even CPU-bound Python
code (a SIGALRM sent by someone else while the timer runs is ignored);
elsewhere the step function runs in a helper thread and the handler
gets :class:`StepTimeoutError` when the time is up (the function itself
cannot be interrupted then, and its late result is discarded). Either way a
step whose deadline passed fails with :class:`StepTimeoutError`, even if its
function swallowed the interrupt and returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast, overload

from . import codec, tracing
from .childwaits import workflow_name
from .codec import StoredStep
from .errors import (
    LeaseLostError,
    OutputSerializationError,
    PayloadTooLargeError,
)
from .execution import Execution
from .keys import step_workflow_key
from .options import RunOptions
from .registry import Workflow
from .step_calls import call_async, call_with_timeout, check_step_timeout
from .waitbase import CHILD_OUTPUTS, begin_step, cached_step
from .waits import WaitMixin, check_sleep_seconds, check_wake_time

__all__ = ["AsyncStep", "Step"]

R = TypeVar("R")
O = TypeVar("O")  # noqa: E741 - output type of a child workflow


def _now_ms() -> int:
    return int(time.time() * 1000)


def _inputs(inputs: object) -> list[Any]:
    if isinstance(inputs, str | bytes | dict) or not isinstance(inputs, list | tuple):
        raise TypeError("run_workflows needs a list (or tuple) of inputs, one per child")
    return list(inputs)


def _run_limit(fn: object, timeout: float | None) -> float | None:
    """``step.run``'s argument checks (sync and async): the step's time limit."""
    if not callable(fn):
        raise TypeError("step.run needs a callable as its second argument")
    return check_step_timeout(timeout)


class _StepCore(WaitMixin):
    """Bookkeeping shared by the sync and async step APIs."""

    __slots__ = ("_ex",)

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    def _begin(self, name: object) -> tuple[str, Any, bool]:
        """Validate, check cancellation and duplicates; return (name, cached, hit)."""
        ex = self._ex
        step = begin_step(ex, name)
        stored = cached_step(ex.steps_cache.get(step))
        if stored is not None and stored.status == "succeeded":
            value = codec.decode_json(stored.output_json) if stored.output_json else None
            ex.hits += 1
            return step, value, True
        # Recorded as `running` (with its start time) before it executes: a fenced
        # write (a worker that lost its lease stops here, before the step's side
        # effects), which also reports a cancel request.
        ex.write_step(
            step,
            StoredStep(
                status="running", started_at=_now_ms(), finished_at=0, attempt=ex.attempt, seq=0
            ),
        )
        # The write proves the lease as of when it was *sent*: a process paused
        # (SIGSTOP) between the send and now may have lost it since. Free unless
        # that pause was long; then one fenced renewal decides.
        ex.confirm_lease()
        ex.set_step(step)
        return step, None, False

    def _succeed(
        self, step: str, value: Any, started: int, children: Sequence[str] | None = None
    ) -> Any:
        """Record ``value`` as the step's output; return its JSON round trip.
        ``children``: the child runs whose outputs ``value`` is (a children wait,
        its values decoded from their records): past ``max_payload_bytes``
        together, the record names them instead (:data:`CHILD_OUTPUTS`)."""
        ex = self._ex
        by_reference = False
        try:
            data = ex.runs.encode_payload(value, f"output of step {step!r}")
        except TypeError as exc:
            err = OutputSerializationError(str(exc))
            self._fail(step, err, started)
            raise err from None
        except PayloadTooLargeError as exc:
            if children is None:
                self._fail(step, exc, started)
                raise
            by_reference = True
        except Exception as exc:
            self._fail(step, exc, started)
            raise
        ex.record_step("succeeded", started)
        ex.write_step(
            step,
            StoredStep(
                status="succeeded",
                started_at=started,
                finished_at=_now_ms(),
                attempt=ex.attempt,
                seq=0,
                output_json=CHILD_OUTPUTS if by_reference else data.decode(),
                children=list(children) if by_reference and children is not None else None,
            ),
        )
        ex.set_step(None)
        return value if by_reference else codec.decode_json(data)

    def _fail(self, step: str, exc: BaseException, started: int) -> None:
        ex = self._ex
        ex.set_step(None)
        if isinstance(exc, LeaseLostError) or ex.lease_lost:
            return
        if ex.gave_up is not None:
            # Redis trouble outlasted a write's ride-out (a child's start, say):
            # the run is put back, its attempt not spent (the executor's DEFER),
            # and the step must run again, not replay the trouble as its failure.
            return
        info = ex.error_info(exc)
        ex.record_step("failed", started)
        with contextlib.suppress(LeaseLostError):
            ex.write_step(
                step,
                StoredStep(
                    status="failed",
                    started_at=started,
                    finished_at=_now_ms(),
                    attempt=ex.attempt,
                    seq=0,
                    error_json=codec.encode_error(info).decode(),
                ),
            )

    def _enqueue_child(
        self,
        step: str,
        workflow: Workflow[Any, Any] | str,
        input: Any,
        run_at: datetime | float | None,
        queue_override: str | None,
        idempotency_key: str | None,
        idempotency_ttl: float | None,
        priority: int | None = None,
    ) -> str:
        ex = self._ex
        child = workflow_name(workflow)
        options = RunOptions.of(
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key or step_workflow_key(ex.run_id, step, child),
            idempotency_ttl=idempotency_ttl,
            priority=priority,
            parent_run_id=ex.run_id,
            system_key=idempotency_key is None,
        )
        return ex.durable(
            lambda: ex.runs.enqueue(workflow, input, options), f"starting child {child!r}"
        )

    def _child_check(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
        input: Any,
        timeout: float | None,
        queue_override: str | None,
        idempotency_key: str | None,
        priority: int | None,
    ) -> Any:
        """``run_workflow``'s check, for sync and async handlers: (done, output or wait)."""
        return self._children_check(
            name,
            workflow,
            [input],
            timeout,
            single=True,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            priority=priority,
        )

    def _fan_out_check(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
        inputs: Sequence[Any],
        timeout: float | None,
        queue_override: str | None,
        priority: int | None,
    ) -> Any:
        """``run_workflows``'s check, for sync and async handlers: (done, outputs or wait)."""
        return self._children_check(
            name,
            workflow,
            _inputs(inputs),
            timeout,
            single=False,
            queue_override=queue_override,
            priority=priority,
        )

    @tracing.traced_step  # a span per step, with the OpenTelemetry extra
    def _run(self, name: str, body: Callable[[str], Any]) -> Any:
        """One step: cached output on replay, else ``body(step)`` recorded."""
        step, cached, hit = self._begin(name)
        if hit:
            return cached
        started = _now_ms()
        try:
            value = body(step)
        except Exception as exc:
            self._fail(step, exc, started)
            raise
        return self._succeed(step, value, started)

    @tracing.traced_step_async
    async def _run_async(self, name: str, body: Callable[[str], Awaitable[Any]]) -> Any:
        """:meth:`_run` for a body that must be awaited."""
        step, cached, hit = self._begin(name)
        if hit:
            return cached
        # In flight until its outcome is recorded: a sibling wait of a gather that
        # suspends meanwhile waits for it, so it is not cut off and run again.
        ex = self._ex
        marker = asyncio.get_running_loop().create_future()
        ex.inflight[marker] = asyncio.current_task()
        started = _now_ms()
        try:
            try:
                value = await body(step)
            except Exception as exc:
                self._fail(step, exc, started)
                raise
            return self._succeed(step, value, started)
        finally:
            del ex.inflight[marker]
            marker.set_result(None)

    def _emit(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
        input: Any,
        run_at: datetime | float | None,
        queue_override: str | None,
        idempotency_key: str | None,
        idempotency_ttl: float | None,
        priority: int | None = None,
    ) -> str:
        """``emit_workflow``: the same, and as cheap, for sync and async handlers."""

        def start(step: str) -> str:
            return self._enqueue_child(
                step,
                workflow,
                input,
                run_at,
                queue_override,
                idempotency_key,
                idempotency_ttl,
                priority,
            )

        return str(self._run(name, start))


class Step(_StepCore):
    """The step API of a sync handler (``ctx.step``)."""

    __slots__ = ()

    # Typed by fn's return type. fn's arguments are not checked against *args:
    # PEP 612 allows no keyword (``timeout``) between *args: P.args and
    # **kwargs: P.kwargs, and mypy cannot infer a lambda with default arguments
    # (``lambda n=name: ...``) against a ParamSpec.
    def run(
        self,
        name: str,
        fn: Callable[..., R],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` once per run; return its (cached) output.

        ``timeout=`` (seconds) is the step's own: ``StepTimeoutError`` when it runs out.
        The value returned is the output's JSON round trip, typed as ``fn`` returns.
        """
        limit = _run_limit(fn, timeout)
        return cast(
            R, self._run(name, lambda step: call_with_timeout(step, fn, args, kwargs, limit))
        )

    def run_workflow(
        self,
        name: str,
        workflow: Workflow[Any, O] | str,
        input: Any = None,
        timeout: float | None = None,
        *,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> O:
        """Start a child workflow (once per run) and return its output; the run
        suspends (its process is freed) until the child finishes. ``timeout``
        (seconds) is durable: ``StepTimeoutError`` when the child is not done by then."""
        done, value = self._child_check(
            name, workflow, input, timeout, queue_override, idempotency_key, priority
        )
        return cast(O, value if done else self._suspend_now(value))

    def run_workflows(
        self,
        name: str,
        workflow: Workflow[Any, O] | str,
        inputs: Sequence[Any],
        timeout: float | None = None,
        *,
        queue_override: str | None = None,
        priority: int | None = None,
    ) -> list[O]:
        """Fan out: start one child per input (once per run), suspend until all are
        finished, return their outputs in input order. A failed child fails the step
        as soon as it fails, with ``RunFailedError`` naming it (the others run to
        their end)."""
        done, value = self._fan_out_check(name, workflow, inputs, timeout, queue_override, priority)
        return cast(list[O], value if done else self._suspend_now(value))

    def sleep(self, name: str, seconds: float) -> None:
        """Durable timer: the run suspends for ``seconds`` (the wake-up time is
        recorded when the step is first reached; replays keep it)."""
        done, value = self._sleep_check(name, check_sleep_seconds(seconds), None)
        if not done:
            self._suspend_now(value)

    def sleep_until(self, name: str, when: datetime | float) -> None:
        """Durable timer until ``when`` (an aware datetime or epoch seconds)."""
        done, value = self._sleep_check(name, None, check_wake_time(when))
        if not done:
            self._suspend_now(value)

    def wait_for_event(self, name: str, event: str, timeout: float | None = None) -> Any:
        """Return the payload of the first event ``event`` sent to this run that no
        earlier step consumed, suspending until one arrives; ``StepTimeoutError``
        after ``timeout`` seconds (durable)."""
        done, value = self._event_check(name, event, timeout)
        return value if done else self._suspend_now(value)

    def emit_workflow(
        self,
        name: str,
        workflow_or_name: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Start a child workflow (once per run) and return its run id.

        ``workflow_or_name`` is a :class:`Workflow` or a workflow's name (SPEC §4's
        parameter name)."""
        return self._emit(
            name,
            workflow_or_name,
            input,
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            priority,
        )


class AsyncStep(_StepCore):
    """The step API of an ``async def`` handler: the same methods, awaitable."""

    __slots__ = ()

    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., Awaitable[R]],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> R: ...

    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., R],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> R: ...

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn`` (a coroutine function, or a sync one) once per run; see :meth:`Step.run`."""
        limit = _run_limit(fn, timeout)
        return await self._run_async(name, lambda step: call_async(step, fn, args, kwargs, limit))

    async def run_workflow(
        self,
        name: str,
        workflow: Workflow[Any, O] | str,
        input: Any = None,
        timeout: float | None = None,
        *,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> O:
        """See :meth:`Step.run_workflow`; gathered waits suspend the run once."""
        done, value = self._child_check(
            name, workflow, input, timeout, queue_override, idempotency_key, priority
        )
        return cast(O, value if done else await self._suspend_gathered(value))

    async def run_workflows(
        self,
        name: str,
        workflow: Workflow[Any, O] | str,
        inputs: Sequence[Any],
        timeout: float | None = None,
        *,
        queue_override: str | None = None,
        priority: int | None = None,
    ) -> list[O]:
        """See :meth:`Step.run_workflows`."""
        done, value = self._fan_out_check(name, workflow, inputs, timeout, queue_override, priority)
        return cast(list[O], value if done else await self._suspend_gathered(value))

    async def sleep(self, name: str, seconds: float) -> None:
        """See :meth:`Step.sleep`."""
        done, value = self._sleep_check(name, check_sleep_seconds(seconds), None)
        if not done:
            await self._suspend_gathered(value)

    async def sleep_until(self, name: str, when: datetime | float) -> None:
        """See :meth:`Step.sleep_until`."""
        done, value = self._sleep_check(name, None, check_wake_time(when))
        if not done:
            await self._suspend_gathered(value)

    async def wait_for_event(self, name: str, event: str, timeout: float | None = None) -> Any:
        """See :meth:`Step.wait_for_event`."""
        done, value = self._event_check(name, event, timeout)
        return value if done else await self._suspend_gathered(value)

    async def emit_workflow(
        self,
        name: str,
        workflow_or_name: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        return self._emit(
            name,
            workflow_or_name,
            input,
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            priority,
        )
