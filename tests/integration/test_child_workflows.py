"""step.run_workflow (child carries parentRunId, runs inline with a single
worker: no deadlock) and step.emit_workflow (Workflow or name string; the
deterministic key means re-running the parent's step creates no second child)."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    Registry,
    Retries,
    RunFailedError,
    StepTimeoutError,
    define_workflow,
)
from redflow_mp.keys import step_workflow_key
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)


def test_run_workflow_inline_with_one_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    threads: dict[str, str] = {}

    @define_workflow("child", registry=registry)
    def child(ctx: Context[Any]) -> dict[str, Any]:
        threads["child"] = threading.current_thread().name
        return {"doubled": ctx.input["n"] * 2, "parent": ctx.run.parent_run_id}

    @define_workflow("parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        threads["parent"] = threading.current_thread().name
        return ctx.step.run_workflow("index", child, {"n": 21}, timeout=20)

    workers.start()  # exactly one worker: the child must run inline
    handle = parent.run()
    out = handle.result(timeout=20)
    assert out == {"doubled": 42, "parent": handle.id}
    assert threads["child"] == threads["parent"]
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["index"]
    assert steps[0].output == out
    children = client.list_runs(workflow="child")
    assert len(children) == 1
    assert children[0].parent_run_id == handle.id
    assert children[0].idempotency_key == step_workflow_key(handle.id, "index", "child")


def test_run_workflow_by_name_on_another_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("remote-child", queue="other", registry=registry)
    def child(ctx: Context[Any]) -> str:
        return "from " + ctx.run.queue

    @define_workflow("remote-parent", queue="main", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("call", "remote-child", None, timeout=20)

    workers.start(queues=["main"])
    workers.start(queues=["other"])
    assert parent.run().result(timeout=20) == "from other"


def test_failed_child_fails_the_parent_step(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("bad-child", registry=registry)
    def bad_child(ctx: Context[Any]) -> None:
        raise ValueError("child broke")

    @define_workflow("sad-parent", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflow("c", bad_child)
        except RunFailedError as exc:
            assert exc.error is not None
            return exc.error.message
        return "no error"

    workers.start()
    assert parent.run().result(timeout=20) == "child broke"


def test_run_workflow_timeout(client: Client, registry: Registry, workers: WorkerPool) -> None:
    @define_workflow("unserved-child", queue="nobody", registry=registry)
    def child(ctx: Context[Any]) -> None:
        return None

    @define_workflow("impatient", queue="main", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflow("c", child, timeout=0.3)
        except StepTimeoutError as exc:
            return str(exc)
        return "no timeout"

    workers.start(queues=["main"])
    assert "timed out after 0.3 s" in parent.run().result(timeout=20)


def test_child_is_not_started_twice_when_the_parent_retries(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    child_runs: Counter[str] = Counter()

    @define_workflow("once-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        child_runs[ctx.run.id] += 1
        return 7

    @define_workflow(
        "retrying-parent",
        retries=Retries(max_attempts=2, initial_delay=0.05, jitter=0),
        registry=registry,
    )
    def parent(ctx: Context[Any]) -> int:
        value = ctx.step.run_workflow("c", child)
        if ctx.run.attempt == 1:
            raise RuntimeError("after the child")
        return int(value)

    workers.start()
    assert parent.run().result(timeout=20) == 7
    assert list(child_runs.values()) == [1]


def test_emit_workflow_with_workflow_and_name(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    got: list[Any] = []

    @define_workflow("notify", registry=registry)
    def notify(ctx: Context[Any]) -> None:
        got.append((ctx.input, ctx.run.parent_run_id))

    @define_workflow("emitter", registry=registry)
    def emitter(ctx: Context[Any]) -> list[str]:
        a = ctx.step.emit_workflow("by-object", notify, {"to": "a"})
        b = ctx.step.emit_workflow("by-name", "notify", {"to": "b"})
        return [a, b]

    workers.start()
    handle = emitter.run()
    a, b = handle.result(timeout=20)
    assert a != b
    for child_id, step in ((a, "by-object"), (b, "by-name")):
        client.handle(child_id).result(timeout=10)
        state = client.get_run(child_id)
        assert state is not None and state.parent_run_id == handle.id
        assert state.idempotency_key == step_workflow_key(handle.id, step, "notify")
    assert sorted(got, key=str) == sorted(
        [({"to": "a"}, handle.id), ({"to": "b"}, handle.id)], key=str
    )


def test_rerunning_the_emit_step_creates_no_second_child(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    emitted: list[str] = []

    @define_workflow("side", registry=registry)
    def side(ctx: Context[Any]) -> None:
        return None

    @define_workflow(
        "crashy-parent",
        retries=Retries(max_attempts=2, initial_delay=0.05, jitter=0),
        registry=registry,
    )
    def parent(ctx: Context[Any]) -> str:
        child_id = ctx.step.emit_workflow("fire", "side", {"n": 1})
        emitted.append(child_id)
        if ctx.run.attempt == 1:
            # as if the process died before the step record was durable:
            # the step runs again on the next attempt
            raw.hdel(client.keys.run_steps(ctx.run.id), "fire")
            raise RuntimeError("crash after emit")
        return child_id

    workers.start()
    handle = parent.run()
    assert handle.result(timeout=20) == emitted[0]
    assert len(emitted) == 2 and emitted[0] == emitted[1]
    assert raw.zcard(client.keys.workflow_runs("side")) == 1


def test_emit_workflow_bad_target(client: Client, registry: Registry, workers: WorkerPool) -> None:
    @define_workflow("bad-emit", registry=registry)
    def parent(ctx: Context[Any]) -> list[str]:
        out = []
        for target in (5, "", None):
            try:
                ctx.step.emit_workflow(f"e-{target!r}", target)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                out.append(type(exc).__name__)
        return out

    workers.start()
    assert parent.run().result(timeout=20) == ["TypeError", "ValueError", "TypeError"]


def test_async_parent_with_child_workflows(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("async-child", registry=registry)
    async def child(ctx: AsyncContext[Any]) -> int:
        return int(await ctx.step.run("inc", lambda: ctx.input + 1))

    @define_workflow("async-parent", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> list[Any]:
        value = await ctx.step.run_workflow("call", child, 41, timeout=20)
        emitted = await ctx.step.emit_workflow("emit", "async-child", 1)
        return [value, emitted]

    workers.start()
    value, emitted = parent.run().result(timeout=20)
    assert value == 42
    assert client.handle(emitted).result(timeout=10) == 2
    wait_until(lambda: len(client.list_runs(workflow="async-child")) == 2, 5)
    # every event loop the worker made is closed (an unclosed one warns when
    # collected, and warnings are errors here)
    workers.stop_all()
    gc.collect()


def test_emit_workflow_with_run_at_schedules_the_child(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("later-child", registry=registry)
    def child(ctx: Context[Any]) -> None:
        return None

    @define_workflow("scheduler-parent", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        return ctx.step.emit_workflow("later", child, None, run_at=time.time() + 3600)

    workers.start()
    child_id = parent.run().result(timeout=10)
    state = client.get_run(child_id)
    assert state is not None and state.status == "scheduled"


def test_canceled_child_fails_the_parent_instead_of_canceling_it(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("doomed-child", queue="nobody", registry=registry)
    def child(ctx: Context[Any]) -> None:
        return None

    @define_workflow(
        "waiting-parent",
        queue="main",
        retries=Retries(max_attempts=3, initial_delay=0.01, jitter=0),
        registry=registry,
    )
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("c", child, None, timeout=20)

    workers.start(queues=["main"])
    handle = parent.run()
    children = wait_until(lambda: client.list_runs(workflow="doomed-child"), 10)
    assert client.cancel_run(children[0].id, "not needed") is True
    with pytest.raises(RunFailedError) as info:
        handle.result(timeout=10)
    assert info.value.error is not None and info.value.error.type == "RunCanceledError"
    assert children[0].id in info.value.error.message
    state = handle.state()
    assert state is not None
    assert state.status == "failed" and state.attempt == 1
    assert state.cancel_requested_at is None


def test_async_parent_gathering_children_with_one_worker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    import asyncio

    running: list[int] = []
    overlap: list[int] = []

    @define_workflow("gathered-child", registry=registry, max_concurrency=10)
    def child(ctx: Context[Any]) -> int:
        running.append(ctx.input)
        overlap.append(len(running))
        time.sleep(0.05)
        running.remove(ctx.input)
        return int(ctx.input) * 10

    @define_workflow("gathering-parent", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> list[Any]:
        calls = (ctx.step.run_workflow(f"c{i}", child, i, timeout=30) for i in range(4))
        return list(await asyncio.gather(*calls))

    workers.start()  # one worker: every child runs inline in the parent's process
    assert parent.run().result(timeout=30) == [0, 10, 20, 30]
    # one child at a time runs inline: the worker's books (and its status-board
    # entry under a supervisor) are per process
    assert max(overlap) == 1
    assert len(client.list_runs(workflow="gathered-child")) == 4
    workers.stop_all()
    gc.collect()
