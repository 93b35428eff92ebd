"""Steps as sloppy user code writes them: a non-finite step timeout, an
``async def`` step function in a sync handler."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    Registry,
    StepExitError,
    StepTimeoutError,
    Worker,
    define_workflow,
)
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("limit", [math.inf, math.nan, 1e10, 1e300])
def test_a_non_finite_step_timeout_is_refused_before_the_step_is_recorded(
    client: Client, registry: Registry, workers: WorkerPool, limit: float, is_async: bool
) -> None:
    # inf in a sync handler used to fail the *step* with OverflowError (setitimer /
    # Thread.join), recorded and retried like the step's own error; nan failed it
    # with ValueError in a sync handler and meant "no timeout" in an async one.
    def refused(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    if is_async:

        @define_workflow("nonfinite", registry=registry)
        async def aflow(ctx: AsyncContext[Any]) -> str:
            try:
                await ctx.step.run("s", lambda: 1, timeout=limit)
            except Exception as exc:
                return refused(exc)
            return "accepted"

        handle = aflow.run()
    else:

        @define_workflow("nonfinite", registry=registry)
        def flow(ctx: Context[Any]) -> str:
            try:
                ctx.step.run("s", lambda: 1, timeout=limit)
            except Exception as exc:
                return refused(exc)
            return "accepted"

        handle = flow.run()
    workers.start()
    out = handle.result(timeout=10)
    assert out.startswith("ValueError: step timeout must be a finite"), out
    assert client.get_run_steps(handle.id) == []


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("limit", ["10", True, [1]])
def test_a_step_timeout_that_is_not_a_number_is_a_type_error(
    client: Client, registry: Registry, workers: WorkerPool, limit: object, is_async: bool
) -> None:
    """As every other option of the API (``run(timeout="5")``,
    ``result(timeout="1")``, ``run_workflow(..., timeout="1")``): a wrong type is a
    ``TypeError``, a number out of range a ``ValueError``. A step's was a
    ``ValueError`` either way."""

    def refused(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    if is_async:

        @define_workflow("badtype", registry=registry)
        async def aflow(ctx: AsyncContext[Any]) -> str:
            try:
                await ctx.step.run("s", lambda: 1, timeout=limit)  # type: ignore[call-overload]
            except Exception as exc:
                return refused(exc)
            return "accepted"

        handle = aflow.run()
    else:

        @define_workflow("badtype", registry=registry)
        def flow(ctx: Context[Any]) -> str:
            try:
                ctx.step.run("s", lambda: 1, timeout=limit)  # type: ignore[arg-type]
            except Exception as exc:
                return refused(exc)
            return "accepted"

        handle = flow.run()
    workers.start()
    out = handle.result(timeout=10)
    assert out.startswith("TypeError: step timeout must be a number of seconds or None"), out
    assert client.get_run_steps(handle.id) == []


def test_an_async_step_function_in_a_sync_handler_is_awaited(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    # It used to be called and its coroutine stored: the step failed with
    # "OutputSerializationError: ... Encoding objects of type coroutine is
    # unsupported" (never retried) and Python warned "never awaited".
    calls: list[int] = []

    async def fetch(n: int) -> dict[str, int]:
        calls.append(n)
        return {"n": n}

    @define_workflow("async-fn-in-sync", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        return [ctx.step.run("a", fetch, 1), ctx.step.run("b", fetch, 2, timeout=5)]

    workers.start()
    handle = flow.run()
    assert handle.result(timeout=10) == [{"n": 1}, {"n": 2}]
    assert calls == [1, 2]


def test_sys_exit_in_a_step_of_an_async_handler_is_the_steps_error(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    # A coroutine step with a timeout runs as a task: its SystemExit used to end
    # the event loop (and the worker thread) instead of reaching the handler.
    def sync_exit() -> None:
        raise SystemExit(3)

    async def async_exit() -> None:
        raise SystemExit("bye")

    @define_workflow("async-exits", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> list[str]:
        out = []
        for i, (fn, limit) in enumerate(
            [(sync_exit, None), (sync_exit, 5), (async_exit, None), (async_exit, 5)]
        ):
            try:
                await ctx.step.run(f"s{i}", fn, timeout=limit)
            except StepExitError as exc:
                out.append(f"{exc} {exc.code!r}")
        return out

    workers.start()
    assert flow.run().result(timeout=10) == [
        "step 's0' called sys.exit(3) 3",
        "step 's1' called sys.exit(3) 3",
        "step 's2' called sys.exit('bye') 'bye'",
        "step 's3' called sys.exit('bye') 'bye'",
    ]
    assert not workers.errors


@pytest.mark.parametrize("then", ["returns", "raises"])
def test_a_step_that_swallows_its_deadline_still_times_out(
    client: Client, registry: Registry, then: str
) -> None:
    # In the main thread the deadline is a signal raised inside the step: a bare
    # `except:` caught it and the step was recorded as whatever came next ("late"
    # as a success, past its 0.2 s timeout); the thread path already said timeout.
    def sloppy() -> str:
        try:
            threading.Event().wait(30)  # interrupted by the deadline
        except:  # noqa: E722 - the sloppy code under test
            if then == "raises":
                raise ValueError("gave up") from None
        return "late"

    @define_workflow("swallows", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        try:
            return ctx.step.run("s", sloppy, timeout=0.2)
        except StepTimeoutError as exc:
            return f"StepTimeoutError: {exc}"

    handle = flow.run()
    worker = Worker(client, block_timeout=0.1)  # in this (main) thread: SIGALRM
    try:
        assert worker.run_until_idle(timeout=20) == 1
    finally:
        worker.close()
    assert handle.result(timeout=5) == "StepTimeoutError: step 's' timed out after 0.2 s"
    steps = client.get_run_steps(handle.id)
    assert steps is not None and steps[0].status.value == "failed"
