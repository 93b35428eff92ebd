"""Every attempt's history (issue 15 #6) through real workers: ``RunState.attempts``
from ``get_run`` (sync and async, one round trip), a step in flight recorded as
``running`` with its start time and never replayed as done. (The scripts:
``tests/lua/test_attempts.py``; ``runs show`` / ``watch`` / the dashboard:
``tests/ops``.)"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Registry,
    Retries,
    RunStatus,
    StepStatus,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from tests.helpers import WorkerPool, command_counts, wait_until

pytestmark = pytest.mark.timeout(60)


def test_get_run_returns_every_attempt_with_its_error(
    redis_url: str, prefix: str, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow(
        "flaky-h",
        retries=Retries(max_attempts=3, initial_delay=0.01, jitter=0),
        registry=registry,
    )
    def flaky(ctx: Context[Any]) -> int:
        if ctx.run.attempt < 3:
            raise KeyError(f"missing {ctx.run.attempt}")
        return ctx.run.attempt

    workers.start()
    handle = flaky.run({})
    assert handle.result(timeout=20) == 3
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert [(a.attempt, a.outcome) for a in state.attempts] == [
        (1, "retried"),
        (2, "retried"),
        (3, "succeeded"),
    ]
    for n, a in enumerate(state.attempts[:2], 1):
        assert a.error is not None and a.error.type == "KeyError"
        assert a.error.message == f"'missing {n}'"
        assert a.error.traceback is not None and "raise KeyError" in a.error.traceback
    assert all(
        a.started_at is not None and a.finished_at is not None and a.started_at <= a.finished_at
        for a in state.attempts
    )
    assert state.attempts[2].error is None
    assert state.attempt_started_at == state.attempts[2].started_at
    # one round trip (a pipeline) reads the run and its history
    counts = command_counts(client.redis, lambda: client.get_run(handle.id))
    assert counts.get("hgetall") == 1 and counts.get("lrange") == 1

    async def read() -> list[tuple[int, str]]:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            got = await ac.get_run(handle.id)
            assert got is not None
            return [(a.attempt, a.outcome) for a in got.attempts]
        finally:
            await ac.aclose()

    assert asyncio.run(read()) == [(a.attempt, a.outcome) for a in state.attempts]


def test_a_step_in_flight_is_recorded_as_running_and_is_not_replayed_as_done(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    inside = threading.Event()
    release = threading.Event()
    runs_of_slow: list[int] = []

    def slow(attempt: int) -> str:
        runs_of_slow.append(attempt)
        if attempt == 1:
            inside.set()
            release.wait(10)
            raise ConnectionError("dropped")
        return "done"

    @define_workflow(
        "inflight", retries=Retries(max_attempts=2, initial_delay=0.01), registry=registry
    )
    def inflight(ctx: Context[Any]) -> str:
        ctx.step.run("first", lambda: 1)
        return ctx.step.run("slow", slow, ctx.run.attempt)

    workers.start()
    handle = inflight.run({})
    assert inside.wait(10)
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [(s.name, s.status) for s in steps] == [
        ("first", StepStatus.SUCCEEDED),
        ("slow", StepStatus.RUNNING),
    ]
    slow_step = steps[1]
    assert slow_step.started_at is not None and slow_step.finished_at is None
    assert slow_step.started_at >= (steps[0].finished_at or 0)
    assert slow_step.attempt == 1
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.RUNNING and state.attempts == []
    release.set()
    assert handle.result(timeout=20) == "done"
    assert runs_of_slow == [1, 2]
    steps = client.get_run_steps(handle.id)
    assert steps is not None
    assert [(s.name, s.status, s.attempt) for s in steps] == [
        ("first", StepStatus.SUCCEEDED, 1),
        ("slow", StepStatus.SUCCEEDED, 2),
    ]


def test_a_running_record_left_by_a_lost_worker_runs_again(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls: list[str] = []

    @define_workflow("replay", registry=registry)
    def replay(ctx: Context[Any]) -> str:
        calls.append("ran")
        return ctx.step.run("work", lambda: "w")

    handle = replay.run({})
    # what a worker killed mid-step leaves behind: the step's `running` record
    raw.hset(
        client.keys.run_steps(handle.id),
        "work",
        b'{"seq":1,"status":"running","startedAt":1,"finishedAt":0,"attempt":1}',
    )
    raw.hset(client.keys.run(handle.id), "startedAt", 1)  # it had started before
    workers.start()
    assert handle.result(timeout=20) == "w"
    steps = client.get_run_steps(handle.id)
    assert steps is not None and steps[0].status is StepStatus.SUCCEEDED
    assert steps[0].started_at is not None and steps[0].started_at > 1
    wait_until(lambda: calls == ["ran"])
