"""Steps: ``ctx.step.run / run_workflow / emit_workflow``, cached by step name.

A step is recorded in ``run:<id>:steps`` as ``running`` when it starts and
with its outcome when it ends (two fenced script calls per executed step). One
that succeeded returns its cached output on a later attempt without running
again; a failed one, or one left ``running`` by a crash, runs again. The
same name twice in one execution raises :class:`DuplicateStepError`. A step's
return value is handed back as its JSON round trip, so the first execution and
a replay return equal values.

Cancellation is checked at every step boundary: a run asked to cancel raises
:class:`RunCanceledError` from the next ``step.*`` call.

Step timeouts: in the main thread of a process that has no other SIGALRM
user, a ``timeout`` arms ``ITIMER_REAL`` and interrupts even CPU-bound Python
code; elsewhere the step function runs in a helper thread and the handler
gets :class:`StepTimeoutError` when the time is up (the function itself
cannot be interrupted then, and its late result is discarded).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast, overload

import msgspec

from . import codec
from .codec import StoredStep
from .errors import (
    DuplicateStepError,
    LeaseLostError,
    OutputSerializationError,
    ResultTimeoutError,
    StepTimeoutError,
)
from .execution import Execution
from .keys import step_workflow_key
from .options import RunOptions, check_name
from .registry import Workflow

__all__ = ["AsyncStep", "Step"]

R = TypeVar("R")
O = TypeVar("O")  # noqa: E741 - output type of a child workflow

_WAIT_SLICE = 0.5


class _StepDeadline(BaseException):
    """Private: raised by the SIGALRM handler; turned into StepTimeoutError."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _alarm_usable() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return False
    return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)


def _raise_deadline(signum: int, frame: object) -> None:
    raise _StepDeadline()


def call_with_timeout(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Call ``fn`` and raise :class:`StepTimeoutError` after ``timeout`` seconds."""
    if timeout is None:
        return fn(*args, **kwargs)
    if _alarm_usable():
        previous = signal.signal(signal.SIGALRM, _raise_deadline)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _StepDeadline:
            raise StepTimeoutError(f"step {name!r} timed out after {timeout:g} s") from None
        finally:
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"redflow-step-{name[:40]}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StepTimeoutError(f"step {name!r} timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _check_step_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError("step timeout must be a positive number of seconds")
    return float(timeout)


def _workflow_name(workflow: Workflow[Any, Any] | str) -> str:
    if isinstance(workflow, Workflow):
        return workflow.name
    if isinstance(workflow, str):
        return check_name(workflow, "workflow name")
    raise TypeError("workflow must be a Workflow or a workflow name")


class _StepCore:
    """Bookkeeping shared by the sync and async step APIs."""

    __slots__ = ("_ex",)

    def __init__(self, execution: Execution) -> None:
        self._ex = execution

    def _begin(self, name: object) -> tuple[str, Any, bool]:
        """Validate, check cancellation and duplicates; return (name, cached, hit)."""
        step = check_name(name, "step name")
        ex = self._ex
        if step in ex.seen:
            raise DuplicateStepError(
                f"step {step!r} was already used in this execution of run {ex.run_id}; "
                "step names must be unique within a run"
            )
        ex.seen.add(step)
        ex.check_cancelled()
        raw = ex.steps_cache.get(step)
        if raw is not None:
            try:
                stored = codec.decode_step(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                stored = None
            if stored is not None and stored.status == "succeeded":
                value = codec.decode_json(stored.output_json) if stored.output_json else None
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

    def _succeed(self, step: str, value: Any, started: int) -> Any:
        ex = self._ex
        try:
            data = ex.runs.encode_payload(value, f"output of step {step!r}")
        except TypeError as exc:
            err = OutputSerializationError(str(exc))
            self._fail(step, err, started)
            raise err from None
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
                output_json=data.decode(),
            ),
        )
        ex.set_step(None)
        return codec.decode_json(data)

    def _fail(self, step: str, exc: BaseException, started: int) -> None:
        ex = self._ex
        ex.set_step(None)
        if isinstance(exc, LeaseLostError) or ex.lease_lost:
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
        child = _workflow_name(workflow)
        options = RunOptions.of(
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key or step_workflow_key(ex.run_id, step, child),
            idempotency_ttl=idempotency_ttl,
            priority=priority,
            parent_run_id=ex.run_id,
        )
        return ex.durable(
            lambda: ex.runs.enqueue(workflow, input, options), f"starting child {child!r}"
        )

    def _wait_child(self, step: str, child_id: str, timeout: float | None) -> Any:
        """Wait for a child run, running it inline when this worker serves its queue."""
        ex = self._ex
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ex.check_cancelled()
            ex.try_inline(child_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise StepTimeoutError(
                    f"step {step!r} timed out after {timeout:g} s waiting for run {child_id}"
                )
            wait = _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)
            try:
                return ex.durable(
                    functools.partial(ex.runs.wait_result, child_id, timeout=wait),
                    f"waiting for child {child_id}",
                )
            except ResultTimeoutError:
                continue

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

    async def _run_async(self, name: str, body: Callable[[str], Awaitable[Any]]) -> Any:
        """:meth:`_run` for a body that must be awaited."""
        step, cached, hit = self._begin(name)
        if hit:
            return cached
        started = _now_ms()
        try:
            value = await body(step)
        except Exception as exc:
            self._fail(step, exc, started)
            raise
        return self._succeed(step, value, started)

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
        if not callable(fn):
            raise TypeError("step.run needs a callable as its second argument")
        limit = _check_step_timeout(timeout)
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
        """Start a child workflow (once per run) and wait for its output."""
        limit = _check_step_timeout(timeout)

        def start_and_wait(step: str) -> Any:
            child_id = self._enqueue_child(
                step, workflow, input, None, queue_override, idempotency_key, None, priority
            )
            return self._wait_child(step, child_id, limit)

        return cast(O, self._run(name, start_and_wait))

    def emit_workflow(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Start a child workflow (once per run) and return its run id."""
        return self._emit(
            name,
            workflow,
            input,
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            priority,
        )


async def _call_async(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Any:
    """Await ``fn`` (a coroutine function, or a sync function run in a thread when a
    timeout applies) and raise :class:`StepTimeoutError` after ``timeout`` seconds.

    The deadline is detected by ``asyncio.wait``, not by catching ``TimeoutError``:
    a step function that raises its own ``TimeoutError`` (a network timeout, say)
    must reach the handler as that error, not be relabelled as a step timeout.
    """
    if timeout is None:
        value = fn(*args, **kwargs)
        if asyncio.iscoroutine(value):
            value = await value
        return value
    if asyncio.iscoroutinefunction(fn):
        task = asyncio.ensure_future(fn(*args, **kwargs))
    else:
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task not in done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # outcome is moot now
            await task
        raise StepTimeoutError(f"step {name!r} timed out after {timeout:g} s")
    return task.result()


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
        if not callable(fn):
            raise TypeError("step.run needs a callable as its second argument")
        limit = _check_step_timeout(timeout)
        return await self._run_async(name, lambda step: _call_async(step, fn, args, kwargs, limit))

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
        limit = _check_step_timeout(timeout)

        async def start_and_wait(step: str) -> Any:
            child_id = self._enqueue_child(
                step, workflow, input, None, queue_override, idempotency_key, None, priority
            )
            return await asyncio.to_thread(self._wait_child, step, child_id, limit)

        return cast(O, await self._run_async(name, start_and_wait))

    async def emit_workflow(
        self,
        name: str,
        workflow: Workflow[Any, Any] | str,
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
            workflow,
            input,
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            priority,
        )
