"""Steps: persisted records, cached output on replay (a completed step never
re-runs on retry), DuplicateStepError, step timeouts (thread and SIGALRM
paths, sync and async), unencodable step output."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    DuplicateStepError,
    OutputSerializationError,
    Registry,
    Retries,
    RunFailedError,
    StepStatus,
    StepTimeoutError,
    Worker,
    define_workflow,
)
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)

FAST = Retries(max_attempts=3, initial_delay=0.05, jitter=0)


@pytest.fixture()
def release() -> Iterator[threading.Event]:
    """Set at teardown so helper threads blocked on it end."""
    event = threading.Event()
    yield event
    event.set()


def test_completed_steps_never_rerun_on_retry(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    counts: Counter[str] = Counter()

    def step_a() -> dict[str, int]:
        counts["a"] += 1
        return {"v": 1}

    def step_b(attempt: int) -> str:
        counts["b"] += 1
        if attempt < 3:
            raise ConnectionError(f"flaky {attempt}")
        return "b-ok"

    @define_workflow("cached", retries=FAST, registry=registry)
    def cached(ctx: Context[Any]) -> list[Any]:
        a = ctx.step.run("a", step_a)
        b = ctx.step.run("b", step_b, ctx.run.attempt)
        return [a, b, ctx.run.attempt]

    workers.start()
    handle = cached.run()
    assert handle.result(timeout=20) == [{"v": 1}, "b-ok", 3]
    assert counts == {"a": 1, "b": 3}
    steps = client.get_run_steps(handle.id)
    assert steps is not None
    assert [(s.name, s.status, s.attempt) for s in steps] == [
        ("a", StepStatus.SUCCEEDED, 1),
        ("b", StepStatus.SUCCEEDED, 3),
    ]
    assert steps[0].output == {"v": 1}
    assert all(s.started_at and s.finished_at and s.started_at <= s.finished_at for s in steps)
    # the stored record has the SPEC §4 fields
    rec = msgspec.json.decode(raw.hget(client.keys.run_steps(handle.id), "a") or b"{}")
    assert {"status", "outputJson", "startedAt", "finishedAt", "attempt"} <= rec.keys()


def test_failed_step_is_recorded_with_its_error(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    def boom() -> None:
        raise KeyError("missing")

    @define_workflow("fails", registry=registry)
    def fails(ctx: Context[Any]) -> None:
        ctx.step.run("ok", lambda: 1)
        ctx.step.run("boom", boom)

    workers.start()
    handle = fails.run()
    with pytest.raises(RunFailedError) as info:
        handle.result(timeout=10)
    assert info.value.error is not None and info.value.error.type == "KeyError"
    assert info.value.error.traceback and "boom" in info.value.error.traceback
    steps = client.get_run_steps(handle.id)
    assert steps is not None
    assert [(s.name, s.status) for s in steps] == [
        ("ok", StepStatus.SUCCEEDED),
        ("boom", StepStatus.FAILED),
    ]
    assert steps[1].error is not None and steps[1].error.type == "KeyError"


def test_step_returns_the_json_round_trip_on_first_run_and_replay(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[Any] = []

    @define_workflow("roundtrip", retries=FAST, registry=registry)
    def roundtrip(ctx: Context[Any]) -> None:
        seen.append(ctx.step.run("t", lambda: (1, 2)))
        if ctx.run.attempt == 1:
            raise RuntimeError("again")

    workers.start()
    roundtrip.run().result(timeout=20)
    assert seen == [[1, 2], [1, 2]]


def test_duplicate_step_name_raises(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("dup-steps", registry=registry)
    def dup(ctx: Context[Any]) -> str:
        ctx.step.run("same", lambda: 1)
        try:
            ctx.step.run("same", lambda: 2)
        except DuplicateStepError as exc:
            return str(exc)
        return "no error"

    @define_workflow("dup-uncaught", registry=registry)
    def dup_uncaught(ctx: Context[Any]) -> None:
        ctx.step.run("x", lambda: 1)
        ctx.step.emit_workflow("x", "dup-steps")

    workers.start()
    assert "'same' was already used" in dup.run().result(timeout=10)
    with pytest.raises(DuplicateStepError):
        dup_uncaught.run().result(timeout=10)


def test_step_timeout_raises_inside_the_handler_worker_thread(
    client: Client, registry: Registry, workers: WorkerPool, release: threading.Event
) -> None:
    @define_workflow("slow-step", registry=registry)
    def slow(ctx: Context[Any]) -> str:
        t0 = time.monotonic()
        try:
            ctx.step.run("slow", release.wait, 30, timeout=0.2)
        except StepTimeoutError as exc:
            return f"{exc} after {time.monotonic() - t0:.1f}"
        return "no timeout"

    workers.start()
    handle = slow.run()
    out = handle.result(timeout=10)
    assert out.startswith("step 'slow' timed out after 0.2 s")
    assert float(out.rsplit(" ", 1)[1]) < 2.0
    steps = client.get_run_steps(handle.id)
    assert steps is not None
    assert steps[0].status is StepStatus.FAILED
    assert steps[0].error is not None and steps[0].error.type == "StepTimeoutError"


def test_step_timeout_interrupts_cpu_bound_code_in_the_main_thread(
    client: Client, registry: Registry
) -> None:
    def spin() -> int:
        end = time.monotonic() + 5
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    @define_workflow("spin", registry=registry)
    def spinner(ctx: Context[Any]) -> float:
        t0 = time.monotonic()
        with pytest.raises(StepTimeoutError):
            ctx.step.run("spin", spin, timeout=0.2)
        return time.monotonic() - t0

    handle = spinner.run()
    worker = Worker(client, block_timeout=0.1)
    try:
        assert worker.run_until_idle(timeout=20) == 1
    finally:
        worker.close()
    assert handle.result(timeout=5) < 4.0


def test_async_step_timeout(
    client: Client, registry: Registry, workers: WorkerPool, release: threading.Event
) -> None:
    async def forever() -> None:
        await asyncio.sleep(30)

    @define_workflow("async-slow", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> list[str]:
        out = []
        for name, fn, args in (("coro", forever, ()), ("sync", release.wait, (30,))):
            try:
                await ctx.step.run(name, fn, *args, timeout=0.2)
            except StepTimeoutError as exc:
                out.append(str(exc))
        return out

    workers.start()
    assert flow.run().result(timeout=10) == [
        "step 'coro' timed out after 0.2 s",
        "step 'sync' timed out after 0.2 s",
    ]


def test_hung_sync_steps_do_not_starve_later_steps_of_async_handlers(
    client: Client, registry: Registry, workers: WorkerPool, release: threading.Event
) -> None:
    """A sync function behind an async handler's step.run(timeout=...) ran in the
    loop's default executor (asyncio.to_thread): every call that hung past its
    timeout kept one of its few threads (min(32, CPUs + 4)) for good. Once they were
    all stuck, every later such step of that worker (any run) timed out without
    running, and so did the loop's DNS lookups. Each call now gets its own thread."""
    ran: list[int] = []

    def quick(i: int) -> int:
        ran.append(i)
        return i

    @define_workflow("hung-steps", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> list[int]:
        for i in range(40):  # more than any default executor has threads
            with pytest.raises(StepTimeoutError):
                await ctx.step.run(f"hang-{i}", release.wait, 30, timeout=0.02)
        return [await ctx.step.run(f"quick-{i}", quick, i, timeout=5) for i in range(3)]

    workers.start()
    assert flow.run().result(timeout=30) == [0, 1, 2]
    assert ran == [0, 1, 2]


def test_unencodable_step_output_fails_the_run_without_retry(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls = Counter[str]()

    def bad() -> object:
        calls["bad"] += 1
        return {1, object()}

    @define_workflow("bad-step", retries=FAST, registry=registry)
    def flow(ctx: Context[Any]) -> None:
        ctx.step.run("bad", bad)

    workers.start()
    handle = flow.run()
    with pytest.raises(OutputSerializationError):
        handle.result(timeout=10)
    assert calls["bad"] == 1
    steps = client.get_run_steps(handle.id)
    assert steps is not None and steps[0].status is StepStatus.FAILED


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        (("", lambda: 1), ValueError),
        ((5, lambda: 1), TypeError),
        (("n" * 10_240, lambda: 1), ValueError),
        (("ok", "not callable"), TypeError),
    ],
)
def test_bad_step_arguments(
    client: Client, registry: Registry, workers: WorkerPool, args: tuple[Any, ...], exc: type
) -> None:
    @define_workflow("bad-args", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        with pytest.raises(exc) as info:
            ctx.step.run(*args)
        try:
            ctx.step.run("t", lambda: 1, timeout=-1)
        except ValueError:
            pass
        else:
            return "negative timeout accepted"
        return type(info.value).__name__

    workers.start()
    assert flow.run().result(timeout=10) == exc.__name__


def test_steps_of_unknown_run_is_none(client: Client) -> None:
    assert client.get_run_steps("NO-SUCH-RUN") is None


def test_worker_stops_promptly_while_a_timed_out_async_step_thread_is_stuck(
    client: Client, registry: Registry, workers: WorkerPool, release: threading.Event
) -> None:
    @define_workflow("stuck-step", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> str:
        try:
            await ctx.step.run("stuck", release.wait, 30, timeout=0.1)
        except StepTimeoutError:
            return "timed out"
        return "no timeout"

    workers.start()
    assert flow.run().result(timeout=10) == "timed out"
    # the step's thread is still blocked (release.wait(30), set at teardown only);
    # stopping the worker must not wait for it: the worker thread ends while the
    # step's thread still blocks (an event, not a time: the former `< 3` s bound
    # timed a loaded machine; a worker that waited for the step's thread would
    # stop only after its 30 s, past stop_all's 20)
    step_thread = "redflow-step-stuck"
    assert any(t.name == step_thread for t in threading.enumerate())
    workers.stop_all(timeout=20)
    assert any(t.name == step_thread and t.is_alive() for t in threading.enumerate())
    assert not release.is_set()


def test_async_steps_can_run_concurrently(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    @define_workflow("gather", registry=registry)
    async def flow(ctx: AsyncContext[Any]) -> list[int]:
        return list(await asyncio.gather(*(ctx.step.run(f"s{i}", slow, i) for i in range(5))))

    workers.start()
    handle = flow.run()
    assert handle.result(timeout=10) == [0, 1, 2, 3, 4]
    steps = client.get_run_steps(handle.id)
    assert steps is not None and sorted(s.name for s in steps) == [f"s{i}" for i in range(5)]
