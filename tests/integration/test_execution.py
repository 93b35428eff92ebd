"""Running workflows end to end with in-process workers: success, context,
bad input, unknown workflow, unencodable output, corrupted records, async
handlers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    InputValidationError,
    OutputSerializationError,
    Registry,
    Retries,
    RunFailedError,
    RunStatus,
    UnknownWorkflowError,
    define_workflow,
)
from tests.helpers import WorkerPool, status_of, wait_until

pytestmark = pytest.mark.timeout(60)


class Resize(msgspec.Struct):
    url: str
    width: int = 100


def test_run_succeeds_and_handler_sees_its_context(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: dict[str, Any] = {}

    @define_workflow("resize", queue="media", schema=Resize, registry=registry)
    def resize(ctx: Context[Resize]) -> dict[str, Any]:
        seen["input"] = ctx.input
        seen["run"] = ctx.run
        seen["cancelled"] = ctx.cancelled
        ctx.raise_if_cancelled()
        ctx.logger.info("resizing %s", ctx.input.url)
        return {"url": ctx.input.url, "w": ctx.input.width}

    workers.start()
    handle = resize.run({"url": "http://x/a.png"})
    assert handle.result(timeout=10) == {"url": "http://x/a.png", "w": 100}
    assert seen["input"] == Resize(url="http://x/a.png")
    info = seen["run"]
    assert (info.id, info.workflow, info.queue) == (handle.id, "resize", "media")
    assert (info.attempt, info.max_attempts, info.parent_run_id) == (1, 1, None)
    assert info.created_at > 0
    assert isinstance(seen["cancelled"], threading.Event)
    assert not seen["cancelled"].is_set()
    state = handle.state()
    assert state is not None
    assert state.status is RunStatus.SUCCEEDED
    assert state.output == {"url": "http://x/a.png", "w": 100}
    assert state.input == {"url": "http://x/a.png"}
    assert state.started_at is not None and state.finished_at is not None
    assert state.created_at <= state.started_at <= state.finished_at


def test_run_by_name_and_none_output(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("noop", registry=registry)
    def noop(ctx: Context[Any]) -> None:
        return None

    workers.start()
    assert client.run_by_name("noop", [1, 2]).result(timeout=10) is None


def test_input_failing_its_schema_fails_without_retry(
    client: Client, registry: Registry, workers: WorkerPool, make_client: Any
) -> None:
    """In the worker: enqueued by a process without the definition (one with it
    refuses the input at the call site: ``test_validation.py``)."""
    calls = []

    @define_workflow(
        "strict", schema=Resize, retries=Retries(max_attempts=3, initial_delay=0), registry=registry
    )
    def strict(ctx: Context[Resize]) -> None:
        calls.append(1)

    client.sync_registry(registry, app="exec-test")
    workers.start()
    handle = make_client(registry=Registry()).run_by_name("strict", {"url": 5})
    with pytest.raises(RunFailedError) as info:
        handle.result(timeout=10)
    assert isinstance(info.value, InputValidationError)
    assert info.value.error is not None
    assert info.value.error.type == "InputValidationError"
    assert info.value.error.retryable is False
    assert "url" in info.value.error.message
    state = handle.state()
    assert state is not None and state.attempt == 1 and state.status is RunStatus.FAILED
    assert calls == []


def test_unknown_workflow_fails_without_retry(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("known", registry=registry)
    def known(ctx: Context[Any]) -> None:
        return None

    workers.start()
    handle = client.run_by_name("never-defined", {"a": 1})
    with pytest.raises(UnknownWorkflowError) as info:
        handle.result(timeout=10)
    assert isinstance(info.value, RunFailedError)
    assert "never-defined" in str(info.value)
    state = handle.state()
    assert state is not None and state.attempt == 1 and state.queue == "default"


def test_unencodable_output_fails_without_retry(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = []

    @define_workflow(
        "bad-output", retries=Retries(max_attempts=3, initial_delay=0), registry=registry
    )
    def bad_output(ctx: Context[Any]) -> object:
        calls.append(1)
        return {"obj": object()}

    workers.start()
    handle = bad_output.run()
    with pytest.raises(OutputSerializationError):
        handle.result(timeout=10)
    assert calls == [1]
    state = handle.state()
    assert state is not None and state.attempt == 1


def test_corrupted_run_in_ready_list_fails_clearly_and_worker_goes_on(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("ok", registry=registry, max_concurrency=10)
    def ok(ctx: Context[Any]) -> str:
        return "fine"

    k = client.keys
    bad_json = ok.run()
    raw.hset(k.run(bad_json.id), "inputJson", "{not json")
    bad_attempt = ok.run()
    raw.hset(k.run(bad_attempt.id), "attempt", "many")
    no_workflow = ok.run()
    raw.hdel(k.run(no_workflow.id), "workflow")
    raw.zadd(k.q_ready("default"), {"GHOST-RUN": 1})
    raw.set(k.run("WRONG-TYPE"), "x")
    raw.zadd(k.q_ready("default"), {"WRONG-TYPE": 2})
    good = ok.run()
    workers.start()
    assert good.result(timeout=10) == "fine"
    with pytest.raises(InputValidationError, match="not valid JSON"):
        bad_json.result(timeout=10)
    for handle in (bad_attempt, no_workflow):
        with pytest.raises(RunFailedError) as info:
            handle.result(timeout=10)
        assert info.value.error is not None and info.value.error.type == "CorruptRecord"
    assert workers.alive() == [True]
    assert ok.run().result(timeout=10) == "fine"


@pytest.mark.parametrize("garbage", ["soon", "1e400"])
def test_run_with_a_garbage_available_at_fails_clearly_and_worker_goes_on(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, garbage: str
) -> None:
    # A neighbour (or a hand edit) wrote a non-integer availableAt into a queued
    # run: the claim handed it over and the worker's parse of the reply raised
    # ValueError out of Worker.run, so the worker died and every later run waited.
    @define_workflow("ok", registry=registry, max_concurrency=10)
    def ok(ctx: Context[Any]) -> str:
        return "fine"

    bad = ok.run()
    raw.hset(client.keys.run(bad.id), "availableAt", garbage)
    good = ok.run()
    workers.start()
    assert good.result(timeout=10) == "fine"
    with pytest.raises(RunFailedError) as info:
        bad.result(timeout=10)
    assert info.value.error is not None and info.value.error.type == "CorruptRecord"
    assert "availableAt" in str(info.value)
    assert workers.alive() == [True]
    assert not workers.errors


def test_async_handler_with_awaitable_steps(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    def plain(x: int) -> int:
        return x + 1

    @define_workflow("async-flow", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> dict[str, int]:
        a = await ctx.step.run("fetch", fetch, ctx.input["x"])
        b = await ctx.step.run("plain", plain, a)
        c = await ctx.step.run("with-timeout", plain, b, timeout=5)
        return {"a": a, "b": b, "c": c}

    workers.start()
    handle = flow.run({"x": 20})
    assert handle.result(timeout=10) == {"a": 40, "b": 41, "c": 42}
    steps = client.get_run_steps(handle.id)
    assert steps is not None
    assert [s.name for s in steps] == ["fetch", "plain", "with-timeout"]
    assert [s.output for s in steps] == [40, 41, 42]


def test_async_step_raising_timeout_error_without_a_step_timeout(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    async def flaky() -> None:
        raise TimeoutError("upstream timed out")

    @define_workflow("async-timeout", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> str:
        try:
            await ctx.step.run("call", flaky)
        except TimeoutError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    workers.start()
    assert flow.run().result(timeout=10) == "TimeoutError: upstream timed out"


def test_status_from_raw_redis_matches_get_run(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("echo", registry=registry)
    def echo(ctx: Context[Any]) -> Any:
        return ctx.input

    workers.start()
    handle = echo.run({"k": [1, "ü"]})
    assert handle.result(timeout=10) == {"k": [1, "ü"]}
    wait_until(lambda: status_of(raw, client, handle.id) == "succeeded", 5)
    assert raw.hget(client.keys.run(handle.id), "outputJson") == msgspec.json.encode(
        {"k": [1, "ü"]}
    )


def test_worker_argument_errors(client: Client, registry: Registry) -> None:
    from redflow_mp import Worker

    with pytest.raises(ValueError, match="at least one queue"):
        Worker(client)  # empty registry, no queues
    with pytest.raises(TypeError, match="not a str"):
        Worker(client, queues="default")
    with pytest.raises(ValueError):
        Worker(client, queues=[""])
    with pytest.raises(ValueError, match="lease_ms"):
        Worker(client, queues=["q"], lease_ms=10)


def test_worker_serves_several_queues(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("on-a", queue="a", registry=registry)
    def on_a(ctx: Context[Any]) -> str:
        return "a"

    @define_workflow("on-b", queue="b", registry=registry)
    def on_b(ctx: Context[Any]) -> str:
        return "b"

    workers.start()  # serves the registry's queues: a and b
    assert [on_b.run().result(timeout=10), on_a.run().result(timeout=10)] == ["b", "a"]


def test_worker_survives_handler_errors_and_many_runs(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("mixed", max_concurrency=4, registry=registry)
    def mixed(ctx: Context[Any]) -> int:
        if ctx.input % 3 == 0:
            raise ValueError(str(ctx.input))
        return int(ctx.input)

    workers.start()
    workers.start()
    handles = [mixed.run(i) for i in range(30)]
    ok, failed = 0, 0
    for i, h in enumerate(handles):
        if i % 3 == 0:
            with pytest.raises(RunFailedError):
                h.result(timeout=10)
            failed += 1
        else:
            assert h.result(timeout=10) == i
            ok += 1
    assert (ok, failed) == (20, 10)
    assert workers.alive() == [True, True]


def test_client_close_is_idempotent(redis_url: str, prefix: str) -> None:
    from redflow_mp import create_client

    c = create_client(redis_url, prefix=prefix, default=False)
    assert c.get_run("X") is None
    c.close()
    c.close()


def test_metrics_label_of_an_unregistered_workflow_is_bounded(
    client: Client, registry: Registry
) -> None:
    """Anyone may enqueue a run of any workflow name on a served queue (run_by_name
    warns and enqueues); the worker fails it, and used to label its metrics with
    that name: 1,000 made-up names were 1,000 new series of each counter and
    histogram in every supervisor, kept until it restarts and rendered at every
    scrape. Names this worker does not know share one label."""
    from redflow_mp import Worker
    from redflow_mp.metrics import Metrics

    @define_workflow("known-metrics", registry=registry)
    def known(ctx: Context[Any]) -> int:
        return 1

    metrics = Metrics()
    for i in range(20):
        client.run_by_name(f"made-up-{i}", None, queue_override="default")
    known.run()
    worker = Worker(client, block_timeout=0.1, metrics=metrics)
    try:
        assert worker.run_until_idle() == 21
    finally:
        worker.close()
    drained = metrics.drain()
    names = {
        dict((k, v) for k, v in labels)["workflow"]
        for _, labels, _ in drained["c"] + drained["h"]
        if any(k == "workflow" for k, _ in labels)
    }
    assert names == {"known-metrics", "(unregistered)"}


def test_a_workers_metrics_count_every_start_time_and_finish_of_its_loop(
    client: Client, registry: Registry
) -> None:
    """The loop's per-run updates (``run_started``; ``run_ended``, which counts a
    finish with its time once the claim carrying it returns): every execution
    counted and timed once, every final status counted once, a retry's time
    kept though its finish is no final status."""
    from redflow_mp import NonRetriableError, Worker
    from redflow_mp.metrics import Metrics

    tries: list[int] = []

    @define_workflow("m-ok", queue="m", registry=registry)
    def ok(ctx: Context[Any]) -> int:
        return 1

    @define_workflow(
        "m-retry",
        queue="m",
        registry=registry,
        retries=Retries(max_attempts=2, initial_delay=0.05, jitter=0),
    )
    def again(ctx: Context[Any]) -> int:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("once")
        return 2

    @define_workflow("m-bad", queue="m", registry=registry)
    def bad(ctx: Context[Any]) -> int:
        raise NonRetriableError("no")

    handles = [ok.run(), ok.run(), again.run(), bad.run(), ok.run()]
    metrics = Metrics()
    worker = Worker(
        client, queues=["m"], block_timeout=0.05, metrics=metrics, max_runs=6, maintenance=True
    )
    worker.run()  # 6 executions: m-retry's two, and 4 others
    assert handles[2].result(timeout=5) == 2
    drained = metrics.drain()
    c = {(n, tuple(map(tuple, labels))): v for n, labels, v in drained["c"]}
    h = {(n, tuple(map(tuple, labels))): v for n, labels, v in drained["h"]}

    def wf(name: str) -> tuple[tuple[str, str], ...]:
        return (("workflow", name),)

    def fin(name: str, status: str) -> tuple[tuple[str, str], ...]:
        return (("status", status), ("workflow", name))

    assert c == {
        ("redflow_runs_started_total", wf("m-ok")): 3,
        ("redflow_runs_started_total", wf("m-retry")): 2,
        ("redflow_runs_started_total", wf("m-bad")): 1,
        ("redflow_runs_finished_total", fin("m-ok", "succeeded")): 3,
        ("redflow_runs_finished_total", fin("m-retry", "succeeded")): 1,
        ("redflow_runs_finished_total", fin("m-bad", "failed")): 1,
        ("redflow_run_retries_total", wf("m-retry")): 1,
    }
    durations = {k[1]: v[-1] for k, v in h.items() if k[0] == "redflow_run_duration_seconds"}
    assert durations == {wf("m-ok"): 3, wf("m-retry"): 2, wf("m-bad"): 1}
    waits = {k[1]: v[-1] for k, v in h.items() if k[0] == "redflow_queue_wait_seconds"}
    assert waits == {wf("m-ok"): 3, wf("m-retry"): 2, wf("m-bad"): 1}


def test_a_sync_handler_returning_a_coroutine_has_it_awaited_and_plain_results_are_kept(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """The executor awaits whatever coroutine a handler returns (a plain ``def``
    handing over to an ``async def``); results of the common exact types skip
    that check, and each is stored as it is (a ``dict`` subclass still checked)."""

    async def later(x: int) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"x": x}

    class Tagged(dict[str, int]):
        pass

    @define_workflow("hands-over", registry=registry)
    def hands_over(ctx: Context[Any]) -> Any:
        return later(ctx.input)

    @define_workflow("plain-results", registry=registry)
    def plain(ctx: Context[Any]) -> Any:
        return [None, True, 3, 2.5, "s", {"a": 1}, [1], (1, 2), Tagged(t=1)][ctx.input]

    workers.start()
    assert hands_over.run(7).result(timeout=10) == {"x": 7}
    got = [plain.run(i).result(timeout=10) for i in range(9)]
    assert got == [None, True, 3, 2.5, "s", {"a": 1}, [1], [1, 2], {"t": 1}]
