"""A run hash whose step counter (``stepSeq``) or another number the scripts read
holds garbage (a hand edit, another program writing into the prefix): the run
fails with a clear ``CorruptRecord`` naming the field, nothing else is lost, and
the worker goes on (before, the step write's HINCRBY raised a raw Lua error)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, RunFailedError, define_workflow
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("garbage", ["abc", "1.5", "nan"])
def test_a_garbage_step_counter_at_claim_fails_the_run_clearly(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, garbage: str
) -> None:
    @define_workflow("stepped", registry=registry, max_concurrency=10)
    def stepped(ctx: Context[Any]) -> int:
        return int(ctx.step.run("one", lambda: 1))

    bad = stepped.run()
    raw.hset(client.keys.run(bad.id), "stepSeq", garbage)
    good = stepped.run()
    workers.start()
    assert good.result(timeout=10) == 1
    with pytest.raises(RunFailedError) as info:
        bad.result(timeout=10)
    error = info.value.error
    assert error is not None and error.type == "CorruptRecord", error
    assert "stepSeq" in error.message
    assert workers.errors == []
    assert stepped.run().result(timeout=10) == 1


def test_a_step_counter_damaged_mid_run_fails_the_run_clearly(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    damage = threading.Event()

    @define_workflow("stepped", registry=registry, max_concurrency=10)
    def stepped(ctx: Context[Any]) -> int:
        ctx.step.run("one", lambda: 1)
        raw.hset(client.keys.run(ctx.run.id), "stepSeq", "abc")
        damage.set()
        return int(ctx.step.run("two", lambda: 2))

    bad = stepped.run()
    workers.start()
    with pytest.raises(RunFailedError) as info:
        bad.result(timeout=10)
    error = info.value.error
    assert error is not None and error.type == "CorruptRecord", error
    assert "stepSeq" in error.message
    assert bad.id in error.message or "run record" in error.message
    steps = client.get_run_steps(bad.id) or []
    assert [s.name for s in steps][:1] == ["one"]
    assert workers.errors == []


def test_a_step_counter_damaged_before_an_event_is_consumed_keeps_the_event(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("waiter", registry=registry, max_concurrency=10)
    def waiter(ctx: Context[Any]) -> Any:
        ctx.step.run("one", lambda: 1)
        assert client.send_event(ctx.run.id, "go", {"n": 1})
        raw.hset(client.keys.run(ctx.run.id), "stepSeq", "abc")
        return ctx.step.wait_for_event("ev", "go")

    bad = waiter.run()
    workers.start()
    with pytest.raises(RunFailedError) as info:
        bad.result(timeout=10)
    error = info.value.error
    assert error is not None and error.type == "CorruptRecord", error
    assert "stepSeq" in error.message
    assert raw.llen(client.keys.run_events(bad.id, "go")) == 1
    assert [s.name for s in client.get_run_steps(bad.id) or []] == ["one"]
    assert workers.errors == []
    assert waiter.run() is not None


@pytest.mark.parametrize(
    ("field", "value", "failed_for"),
    [
        ("priority", "nan", ""),
        ("createdAt", "nan", "field createdAt is not an integer"),
        ("stepBytes", "nan", ""),
        ("stepBytes", "inf", ""),
        ("idempotencyTtlMs", "nan", ""),
    ],
)
def test_a_number_field_read_as_nan_or_inf_is_treated_as_garbage(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    field: str,
    value: str,
    failed_for: str,
) -> None:
    # Lua's tonumber reads 'nan' and 'inf' (strtod): a damaged field became a NaN
    # score (the retry's ZADD raised a Lua error at every try, the run never
    # finished) or a reply field 'nan' (the worker's int() raised ValueError out
    # of the claim loop). Read as garbage, they take the default as 'abc' does,
    # or fail the run at its claim where the claim checks the field.
    @define_workflow("w", registry=registry, max_concurrency=10, retries=Retries(max_attempts=2))
    def w(ctx: Context[Any]) -> int:
        if ctx.run.attempt == 1:
            ctx.step.run("one", lambda: 1)
            raw.hset(client.keys.run(ctx.run.id), field, value)
            raise RuntimeError("first")
        return 2

    handle = w.run(idempotency_key="k")
    workers.start()
    if failed_for:
        with pytest.raises(RunFailedError) as info:
            handle.result(timeout=15)
        error = info.value.error
        assert error is not None and error.type == "CorruptRecord", error
        assert failed_for in error.message
    else:
        assert handle.result(timeout=15) == 2
    assert workers.errors == []
