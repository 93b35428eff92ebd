"""What a handler hands back that the store cannot take as it is: an output or a
step result holding a lone surrogate (a file name from ``os.listdir`` that is
not UTF-8), an exception whose ``str()`` raises. Each ends the run clearly (or
fails the step) and the worker goes on with the next run; before, the first two
killed the worker (in a supervisor: the child, over and over, until the crash
cap failed the run) and left the run ``running``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    OutputSerializationError,
    Registry,
    Retries,
    RunFailedError,
    define_workflow,
)
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)

NAME = "caf\udce9.csv"  # os.fsdecode(b"caf\xe9.csv") on a UTF-8 system


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


def _ok(registry: Registry) -> Any:
    @define_workflow("ok", registry=registry)
    def ok(ctx: Context[Any]) -> int:
        return 7

    return ok


def _worker_goes_on(registry: Registry, workers: WorkerPool) -> None:
    assert _ok(registry).run().result(timeout=10) == 7
    assert workers.alive() == [True], workers.errors


def test_an_output_with_a_lone_surrogate_fails_the_run_not_the_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls: list[int] = []

    @define_workflow("listing", retries=Retries(max_attempts=3), registry=registry)
    def listing(ctx: Context[Any]) -> list[str]:
        calls.append(1)
        return [NAME]

    workers.start()
    handle = listing.run()
    with pytest.raises(OutputSerializationError, match="not valid Unicode"):
        handle.result(timeout=10)
    assert calls == [1]  # not retried, like any output that cannot be stored
    _worker_goes_on(registry, workers)


def test_a_step_result_with_a_lone_surrogate_is_an_output_serialization_error(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("step-listing", registry=registry)
    def step_listing(ctx: Context[Any]) -> str:
        try:
            ctx.step.run("ls", lambda: [NAME])
        except OutputSerializationError as exc:
            return f"refused: {exc}"
        return "stored"

    workers.start()
    out = step_listing.run().result(timeout=10)
    assert out.startswith("refused: output of step 'ls'") and "not valid Unicode" in out
    _worker_goes_on(registry, workers)


def test_an_exception_whose_str_raises_fails_the_run_not_the_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("unprintable", registry=registry)
    def unprintable(ctx: Context[Any]) -> None:
        raise Unprintable()

    workers.start()
    handle = unprintable.run()
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=10)
    assert failed.value.error is not None and failed.value.error.type == "Unprintable"
    assert "str() failed" in failed.value.error.message
    _worker_goes_on(registry, workers)


def test_an_exception_message_with_a_lone_surrogate_is_stored_escaped(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("parse", registry=registry)
    def parse(ctx: Context[Any]) -> None:
        raise ValueError(f"cannot parse {NAME}")

    workers.start()
    handle = parse.run()
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=10)
    assert failed.value.error is not None
    assert failed.value.error.message == "cannot parse caf\\udce9.csv"
    _worker_goes_on(registry, workers)


def test_an_output_with_an_int_of_5000_digits_fails_the_run_not_the_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """Python refuses to print an int of more than 4,300 digits (ValueError), so
    msgspec cannot encode it; the ValueError escaped and ended the worker."""

    @define_workflow("factorial", registry=registry)
    def factorial(ctx: Context[Any]) -> int:
        return 10**5000

    @define_workflow("factorial-step", registry=registry)
    def factorial_step(ctx: Context[Any]) -> str:
        try:
            ctx.step.run("big", lambda: 10**5000)
        except OutputSerializationError as exc:
            return str(exc)
        return "stored"

    workers.start()
    with pytest.raises(OutputSerializationError, match="4300 digits"):
        factorial.run().result(timeout=10)
    assert "4300 digits" in factorial_step.run().result(timeout=10)
    with pytest.raises(TypeError, match=r"^input is not JSON-encodable: .*4300 digits"):
        factorial.run(10**5000)
    _worker_goes_on(registry, workers)


def test_an_async_handler_letting_a_cancelled_error_out_fails_the_run_not_the_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """``asyncio.CancelledError`` is a BaseException: out of a handler that awaited
    a task something else cancelled, it ended the worker (a supervisor child died
    once per attempt until the crash cap failed the run)."""

    @define_workflow("awaits-cancelled", retries=Retries(max_attempts=2), registry=registry)
    async def awaits_cancelled(ctx: AsyncContext[Any]) -> None:
        task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        await task

    workers.start()
    handle = awaits_cancelled.run()
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=20)
    assert failed.value.error is not None and failed.value.error.type == "CancelledError"
    state = handle.state()
    assert state is not None and state.attempt == 2  # retried like any other error
    _worker_goes_on(registry, workers)


def test_on_failure_hooks_that_raise_leave_the_run_failed_and_the_worker_running(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """SPEC §4: an on_failure hook's own errors are logged and never change the
    run's outcome. An async hook letting a CancelledError out ended the worker."""
    calls: list[str] = []

    async def cancelled_hook(fctx: Any) -> None:
        calls.append("cancelled")
        task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        await task

    def unprintable_hook(fctx: Any) -> None:
        calls.append("unprintable")
        raise Unprintable()

    for name, hook in (("hook-cancelled", cancelled_hook), ("hook-unprintable", unprintable_hook)):

        @define_workflow(name, on_failure=hook, registry=registry)
        def failing(ctx: Context[Any]) -> None:
            raise ValueError("boom")

    workers.start()
    for name in ("hook-cancelled", "hook-unprintable"):
        with pytest.raises(RunFailedError, match="boom"):
            client.run_by_name(name).result(timeout=10)
    _worker_goes_on(registry, workers)
    assert calls == ["cancelled", "unprintable"]


def test_an_input_with_a_lone_surrogate_is_refused_at_the_call(
    client: Client, registry: Registry
) -> None:
    ok = _ok(registry)
    with pytest.raises(TypeError, match=r"^input is not JSON-encodable: .*not valid Unicode"):
        ok.run({"file": NAME})
    with pytest.raises(TypeError, match=r"^payload of event 'go' is not JSON-encodable"):
        client.send_event(ok.run().id, "go", NAME)
