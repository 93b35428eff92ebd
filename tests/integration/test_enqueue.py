"""Starting runs from the client: idempotency (also from concurrent threads),
delayed runs promoted when due, run options, bad arguments, payload limit,
the default client."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    PayloadTooLargeError,
    RedflowError,
    Registry,
    RunStatus,
    create_client,
    define_workflow,
    get_default_client,
)
from redflow_mp.client import set_default_client
from redflow_mp.maintenance import promote_due
from tests.helpers import WorkerPool, status_of

pytestmark = pytest.mark.timeout(60)


def _wf(registry: Registry, name: str = "job", **kw: Any) -> Any:
    @define_workflow(name, registry=registry, **kw)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


def test_same_idempotency_key_same_run(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    job = _wf(registry)
    a = job.run({"n": 1}, idempotency_key="upload-123")
    b = job.run({"n": 2}, idempotency_key="upload-123")
    c = client.run_by_name("job", {"n": 3}, idempotency_key="upload-123")
    assert a.id == b.id == c.id
    assert a == b
    state = a.state()
    assert state is not None and state.input == {"n": 1}
    assert state.idempotency_key == "upload-123"
    assert raw.zcard(client.keys.runs_created) == 1
    assert job.run({"n": 4}, idempotency_key="other").id != a.id
    # no expiry until the run finishes; then the TTL (default 7 days) from creation
    assert raw.pttl(client.keys.idempotency("job", "upload-123")) == -1
    assert state.idempotency_key == "upload-123"
    assert raw.hget(client.keys.run(a.id), "idempotencyTtlMs") == str(7 * 24 * 3600 * 1000).encode()


def test_idempotency_under_concurrent_callers(
    raw: redis.Redis, client: Client, registry: Registry, make_client: Any
) -> None:
    job = _wf(registry)
    others = [make_client() for _ in range(3)]
    barrier = threading.Barrier(12)
    ids: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        c = [client, *others][i % 4]
        barrier.wait()
        for n in range(10):
            h = job.run({"i": i, "n": n}, idempotency_key="same-key", client=c)
            with lock:
                ids.append(h.id)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 120
    assert len(set(ids)) == 1
    assert raw.zcard(client.keys.runs_created) == 1
    assert raw.zcard(client.keys.q_ready("default")) == 1


def test_idempotency_ttl_is_honoured(raw: redis.Redis, client: Client, registry: Registry) -> None:
    job = _wf(registry)
    h = job.run(idempotency_key="short", idempotency_ttl=30)
    assert raw.hget(client.keys.run(h.id), "idempotencyTtlMs") == b"30000"
    raw.delete(client.keys.idempotency("job", "short"))  # as expiry would
    assert job.run(idempotency_key="short").id != h.id


def test_delayed_run_is_promoted_when_due(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    job = _wf(registry)
    in_an_hour = job.run("later", run_at=datetime.now(UTC) + timedelta(hours=1))
    soon = job.run("soon", run_at=time.time() + 0.3)
    for h in (in_an_hour, soon):
        state = h.state()
        assert state is not None and state.status is RunStatus.SCHEDULED
    assert promote_due(client) == (
        0,
        raw.zrange(client.keys.q_scheduled("default"), 0, 0, withscores=True)[0][1],
    )
    workers.start()  # maintenance promotes while idle
    t0 = time.time()
    assert soon.result(timeout=10) == "soon"
    started = soon.state()
    assert started is not None and started.started_at is not None
    assert started.started_at >= (t0 + 0.3) * 1000 - 400  # not before it was due
    assert status_of(raw, client, in_an_hour.id) == "scheduled"


def test_run_at_in_the_past_runs_now(client: Client, registry: Registry) -> None:
    job = _wf(registry)
    h = job.run(run_at=datetime.now(UTC) - timedelta(minutes=5))
    state = h.state()
    assert state is not None and state.status is RunStatus.QUEUED


def test_naive_run_at_is_rejected(client: Client, registry: Registry) -> None:
    job = _wf(registry)
    with pytest.raises(ValueError, match="aware"):
        job.run(run_at=datetime.now())
    with pytest.raises(TypeError):
        job.run(run_at="tomorrow")
    with pytest.raises(ValueError):
        job.run(run_at=float("nan"))
    with pytest.raises(ValueError):
        job.run(run_at=-5)


def test_queue_override(raw: redis.Redis, client: Client, registry: Registry) -> None:
    job = _wf(registry, queue="normal")
    h = job.run(queue_override="urgent")
    state = h.state()
    assert state is not None and state.queue == "urgent"
    assert raw.zrange(client.keys.q_ready("urgent"), 0, -1) == [h.id.encode()]


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda c: c.run_by_name(123), TypeError),
        (lambda c: c.run_by_name(""), ValueError),
        (lambda c: c.run_by_name("   "), ValueError),
        (lambda c: c.run_by_name(None), TypeError),
        (lambda c: c.run_by_name("job", queue_override=""), ValueError),
        (lambda c: c.run_by_name("job", queue_override=7), TypeError),
        (lambda c: c.run_by_name("job", idempotency_key=""), ValueError),
        (lambda c: c.run_by_name("job", idempotency_key=5), TypeError),
        (lambda c: c.run_by_name("job", idempotency_key="k" * 10_240), ValueError),
        (lambda c: c.run_by_name("job", idempotency_ttl=0), ValueError),
        (lambda c: c.run_by_name("job", idempotency_ttl="1"), TypeError),
        (lambda c: c.run_by_name("job", timeout=-1), ValueError),
        (lambda c: c.run_by_name("job", {"x": object()}), TypeError),
        (lambda c: c.get_run(5), TypeError),
        (lambda c: c.get_run(""), ValueError),
        (lambda c: c.handle(None), TypeError),
    ],
)
def test_bad_arguments_raise_clear_errors(
    raw: redis.Redis, client: Client, registry: Registry, call: Any, exc: type[Exception]
) -> None:
    _wf(registry)
    with pytest.raises(exc):
        call(client)
    assert not raw.exists(client.keys.runs_created)  # nothing was enqueued


def test_payload_size_limit(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    job = _wf(registry)
    with create_client(
        redis_url, prefix=prefix, registry=registry, max_payload_bytes=2048, default=False
    ) as small:
        job.run("x" * 1000, client=small)
        with pytest.raises(PayloadTooLargeError, match="2048") as info:
            job.run("x" * 5000, client=small)
        assert isinstance(info.value, ValueError)
        assert raw.zcard(small.keys.runs_created) == 1
        with pytest.raises(ValueError):
            create_client(redis_url, prefix=prefix, max_payload_bytes=10, default=False)
        with pytest.raises(TypeError):
            create_client(
                redis_url,
                prefix=prefix,
                max_payload_bytes="1MB",  # type: ignore[arg-type]
                default=False,
            )


def test_large_output_fails_the_run_clearly(
    redis_url: str, prefix: str, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("big", registry=registry)
    def big(ctx: Context[Any]) -> str:
        return "y" * 10_000

    small = create_client(
        redis_url, prefix=prefix, registry=registry, max_payload_bytes=4096, default=False
    )
    try:
        workers.start(client=small)
        with pytest.raises(PayloadTooLargeError):
            big.run(client=small).result(timeout=10)
    finally:
        workers.stop_all()
        small.close()


def test_default_client_and_explicit_client(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    job = _wf(registry)
    set_default_client(None)
    with pytest.raises(RedflowError, match="no client"):
        job.run()
    first = create_client(redis_url, prefix=prefix, registry=registry)
    other = create_client(redis_url, prefix=prefix + "-b", registry=registry, default=False)
    try:
        assert get_default_client() is first
        h = job.run()
        assert raw.exists(first.keys.run(h.id))
        h2 = job.run(client=other)
        assert raw.exists(other.keys.run(h2.id))
        assert not raw.exists(first.keys.run(h2.id))
    finally:
        other.close()
        first.close()
    assert get_default_client() is None  # closing the default client unsets it


def test_prefix_with_braces_is_rejected(redis_url: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        create_client(redis_url, prefix="my{app}", default=False)
    with pytest.raises(ValueError):
        create_client(redis_url, prefix="", default=False)


def test_bad_urls_are_rejected() -> None:
    with pytest.raises(ValueError, match="scheme"):
        create_client("http://localhost:6379", default=False)
    with pytest.raises(ValueError):
        create_client("", default=False)


def test_client_from_a_callers_redis_client(
    redis_server: Any, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    job = _wf(registry)
    callers = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="either url or redis"):
            create_client(redis_server.url, redis=callers, default=False)
        c = create_client(redis=callers, prefix=prefix, registry=registry, default=False)
        try:
            h = job.run({"x": 1}, client=c)
            state = c.get_run(h.id)
            assert state is not None and state.input == {"x": 1}
        finally:
            c.close()
        assert callers.ping()  # the caller's client is not closed by ours
    finally:
        callers.close()


def test_a_closed_client_refuses_every_call(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    """After close() nothing reconnects behind the caller's back: each call says the
    client is closed (and nothing is written)."""
    job = _wf(registry)
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False)
    h = job.run({"x": 1}, client=c)  # connects the hot path and the pool
    assert c.get_run(h.id) is not None
    c.close()
    c.close()  # twice is fine
    calls: list[Any] = [
        lambda: job.run({"x": 2}, client=c),
        lambda: c.run_by_name("job", {"x": 3}),
        lambda: c.get_run(h.id),
        lambda: c.list_runs(),
        lambda: c.get_run_steps(h.id),
        lambda: c.cancel_run(h.id),
        lambda: c.resume_run(h.id),
        lambda: c.list_workflows(),
        lambda: c.get_workflow_meta("job"),
        lambda: h.result(timeout=1),
        lambda: h.state(),
    ]
    for call in calls:
        with pytest.raises(RedflowError, match="is closed"):
            call()
    assert raw.zcard(c.keys.runs_created) == 1
    # Another thread has no connection of its own yet: it is refused too.
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            job.run({"x": 4}, client=c)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RedflowError)
    assert raw.zcard(c.keys.runs_created) == 1
