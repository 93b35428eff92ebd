"""Payloads nested too deeply (issue 10 #12): msgspec recurses, so a value about a
thousand levels deep raised RecursionError at enqueue, in get_run, and in the worker
(which crashed its process until the crash cap). Now: a clear InputValidationError
at enqueue, an unreadable payload where one is stored, a failed run (not a dead
worker), and an OutputSerializationError for an output or a step result."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    InputValidationError,
    OutputSerializationError,
    Registry,
    RunFailedError,
    define_workflow,
)
from redflow_mp.codec import MAX_NESTING, decode_json, encode_json
from tests.helpers import WorkerPool, text

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep (built without recursion)."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


def _echo(ctx: Context[Any]) -> Any:
    return ctx.input


def test_input_nested_too_deeply_is_refused_at_enqueue(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    echo = define_workflow("echo", registry=registry)(_echo)
    for depth in (1000, 5000, MAX_NESTING + 1):
        with pytest.raises(InputValidationError, match="input is nested too deeply"):
            echo.run(nested(depth), client=client)
        with pytest.raises(InputValidationError, match="input is nested too deeply"):
            client.run_by_name("echo", {"a": nested(depth)})
    assert raw.zcard(client.keys.runs_created) == 0  # nothing was written
    # At the limit it is accepted and round-trips; brackets inside strings do not count.
    workers.start()
    at_limit = nested(MAX_NESTING)
    assert echo.run(at_limit, client=client).result(timeout=10) == at_limit
    brackets = {"text": "[{" * 5000, "list": ["]" * 10, '"[', "\\"]}
    assert echo.run(brackets, client=client).result(timeout=10) == brackets
    assert decode_json(encode_json(at_limit)) == at_limit


def test_stored_input_nested_too_deeply_fails_the_run_not_the_worker(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A run whose stored input is 1,000 levels deep (written by another tool): get_run
    shows it as unreadable, the worker fails it with InputValidationError and goes on."""
    echo = define_workflow("echo", registry=registry)(_echo)
    handle = echo.run({"fine": True}, client=client)
    raw.hset(client.keys.run(handle.id), "inputJson", deep_json(1000))
    state = client.get_run(handle.id)
    assert state is not None and isinstance(state.input, str)
    assert state.input.startswith("<unreadable") and "nested too deeply" in state.input
    assert [r.id for r in client.list_runs()] == [handle.id]
    workers.start()
    with pytest.raises(InputValidationError, match="nested too deeply"):
        handle.result(timeout=10)
    assert workers.alive() == [True]
    assert not workers.errors
    assert echo.run({"next": 1}, client=client).result(timeout=10) == {"next": 1}
    state = client.get_run(handle.id)
    assert state is not None and state.error is not None
    assert state.error.type == "InputValidationError" and not state.error.retryable
    assert text(raw.hget(client.keys.run(handle.id), "attempt")) == "1"


def test_output_or_step_result_nested_too_deeply_fails_the_run(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("deep-output", registry=registry)
    def deep_output(ctx: Context[Any]) -> Any:
        return nested(ctx.input)

    @define_workflow("deep-step", registry=registry)
    def deep_step(ctx: Context[Any]) -> Any:
        return ctx.step.run("build", nested, ctx.input)

    workers.start()
    for wf in (deep_output, deep_step):
        for depth in (1000, MAX_NESTING + 1):
            with pytest.raises(RunFailedError) as info:
                wf.run(depth, client=client).result(timeout=10)
            assert isinstance(info.value, OutputSerializationError), info.value
            assert info.value.error is not None
            assert "nested too deeply" in info.value.error.message
    assert workers.alive() == [True]
    assert deep_output.run(3, client=client).result(timeout=10) == nested(3)
