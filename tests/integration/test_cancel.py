"""Cancellation: queued / scheduled / parked runs end canceled at once; a running
run sees ctx.cancelled within one heartbeat, gets RunCanceledError at the next
step boundary and ends canceled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Registry,
    RunCanceledError,
    RunStatus,
    define_workflow,
)
from tests.helpers import WorkerPool, status_of, wait_until

pytestmark = pytest.mark.timeout(60)

LEASE_MS = 600  # heartbeat every 0.2 s


@pytest.fixture()
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_cancel_queued_run(client: Client, registry: Registry) -> None:
    @define_workflow("later", registry=registry)
    def later(ctx: Context[Any]) -> None:
        return None

    handle = later.run()
    assert handle.cancel("changed my mind") is True
    state = handle.state()
    assert state is not None and state.status is RunStatus.CANCELED
    assert state.cancel_reason == "changed my mind"
    assert state.cancel_requested_at is not None and state.finished_at is not None
    with pytest.raises(RunCanceledError, match="changed my mind") as info:
        handle.result(timeout=5)
    assert info.value.reason == "changed my mind"
    assert info.value.run_id == handle.id


def test_cancel_scheduled_run(raw: redis.Redis, client: Client, registry: Registry) -> None:
    @define_workflow("sched", registry=registry)
    def sched(ctx: Context[Any]) -> None:
        return None

    handle = sched.run(run_at=time.time() + 3600)
    assert status_of(raw, client, handle.id) == "scheduled"
    assert client.cancel_run(handle.id) is True
    assert status_of(raw, client, handle.id) == "canceled"
    assert not raw.exists(client.keys.q_scheduled("default"))
    with pytest.raises(RunCanceledError):
        handle.result(timeout=5)


def test_cancel_unknown_or_finished_run_returns_false(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("quick", registry=registry)
    def quick(ctx: Context[Any]) -> int:
        return 1

    workers.start()
    assert client.cancel_run("NO-SUCH-RUN") is False
    handle = quick.run()
    assert handle.result(timeout=10) == 1
    assert handle.cancel() is False
    state = handle.state()
    assert state is not None and state.status is RunStatus.SUCCEEDED


def test_cancel_bad_arguments(client: Client) -> None:
    with pytest.raises(TypeError):
        client.cancel_run(123)  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        client.cancel_run("")
    with pytest.raises(TypeError):
        client.cancel_run("R", reason=5)  # type: ignore[call-overload]


def test_a_huge_cancel_reason_is_refused(client: Client, registry: Registry) -> None:
    """The reason was unbounded (max_payload_bytes does not cover it) and is
    copied into the run's cancelReason and errorJson and into every child a
    cancel cascades to: a 10 MB reason on a parent of 10,000 children was
    200 GB of Redis memory."""

    @define_workflow("reasoned", registry=registry)
    def reasoned(ctx: Context[Any]) -> None:
        return None

    handle = reasoned.run()
    with pytest.raises(ValueError, match="reason"):
        client.cancel_run(handle.id, reason="x" * 5_000)
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.QUEUED  # nothing done
    assert client.cancel_run(handle.id, reason="y" * 4_000) is True


def test_cancel_running_run_stops_it_at_the_next_step(
    client: Client, registry: Registry, workers: WorkerPool, release: threading.Event
) -> None:
    started = threading.Event()
    noticed: list[float] = []
    after: list[str] = []

    @define_workflow("long", registry=registry)
    def long(ctx: Context[Any]) -> str:
        ctx.step.run("first", lambda: 1)
        started.set()
        if not ctx.cancelled.wait(10):
            return "never cancelled"
        noticed.append(time.monotonic())
        ctx.step.run("second", lambda: after.append("ran"))  # raises RunCanceledError
        return "step after cancel did not raise"

    workers.start(lease_ms=LEASE_MS)
    handle = long.run()
    assert started.wait(10)
    asked = time.monotonic()
    assert handle.cancel("stop now") is True
    state = handle.state()
    assert state is not None and state.status is RunStatus.RUNNING
    assert state.cancel_requested_at is not None
    with pytest.raises(RunCanceledError, match="stop now"):
        handle.result(timeout=10)
    # ctx.cancelled was set within about one heartbeat (lease/3 = 0.2 s)
    assert noticed
    assert noticed[0] - asked < 1.0
    assert after == []
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["first"]
    final = handle.state()
    assert final is not None and final.status is RunStatus.CANCELED


def test_handler_that_swallows_cancel_still_ends_canceled(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    started = threading.Event()

    @define_workflow("stubborn", registry=registry)
    def stubborn(ctx: Context[Any]) -> str:
        started.set()
        ctx.cancelled.wait(10)
        try:
            ctx.raise_if_cancelled()
        except RunCanceledError:
            return "ignored"
        return "not cancelled"

    workers.start(lease_ms=LEASE_MS)
    handle = stubborn.run()
    assert started.wait(10)
    handle.cancel()
    with pytest.raises(RunCanceledError):
        handle.result(timeout=10)
    state = handle.state()
    assert state is not None and state.status is RunStatus.CANCELED
    assert state.output == "ignored"  # kept for inspection


def test_cancel_is_not_retried(client: Client, registry: Registry, workers: WorkerPool) -> None:
    from redflow_mp import Retries

    started = threading.Event()
    calls = []

    @define_workflow(
        "cancel-no-retry",
        retries=Retries(max_attempts=3, initial_delay=0.01, jitter=0),
        registry=registry,
    )
    def flow(ctx: Context[Any]) -> None:
        calls.append(ctx.run.attempt)
        started.set()
        ctx.cancelled.wait(10)
        ctx.step.run("next", lambda: 1)

    workers.start(lease_ms=LEASE_MS)
    handle = flow.run()
    assert started.wait(10)
    handle.cancel()
    with pytest.raises(RunCanceledError):
        handle.result(timeout=10)
    assert calls == [1]


def test_parked_run_can_be_canceled(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    release: threading.Event,
) -> None:
    started = threading.Event()

    @define_workflow("single", max_concurrency=1, registry=registry)
    def single(ctx: Context[Any]) -> str:
        started.set()
        release.wait(10)
        return "done"

    workers.start()
    workers.start()
    first = single.run()
    assert started.wait(10)
    parked = single.run()
    wait_until(
        lambda: raw.zrange(client.keys.wf_waiting("single"), 0, -1) == [parked.id.encode()], 10
    )
    assert parked.cancel() is True
    with pytest.raises(RunCanceledError):
        parked.result(timeout=5)
    release.set()
    assert first.result(timeout=10) == "done"


def test_a_cancel_cascade_sends_its_children_a_chunk_at_a_time(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cascade sent one cancel_run per child, one round trip each, and scanned
    every child's children set: a parent with 20,000 queued children took 2.5 s
    to cancel (100,000: ~12 s, in the CLI, the dashboard's request or the worker
    that saw the cancel). Now a chunk of children per round trip, and only a
    child with children of its own is scanned."""
    from redflow_mp.scripts import Scripts
    from tests.helpers import command_counts

    @define_workflow("fan", registry=registry)
    def fan(ctx: Context[Any]) -> None:
        return None

    parent = fan.run().id
    children = [h.id for h in fan.run_many([None] * 60)]
    grandchild = fan.run().id
    raw.sadd(client.keys.run_children(parent), *children)
    raw.sadd(client.keys.run_children(children[7]), grandchild)
    for run_id in children:  # what run_workflow writes: the cascade cancels its own
        raw.hset(client.keys.run(run_id), "parentRunId", parent)
    raw.hset(client.keys.run(grandchild), "parentRunId", children[7])
    singles = 0
    real_cancel = Scripts.cancel

    def counted(self: Scripts, run_id: str, reason: str, parent: str = "") -> str | None:
        nonlocal singles
        singles += 1
        return real_cancel(self, run_id, reason, parent)

    monkeypatch.setattr(Scripts, "cancel", counted)
    counts = command_counts(raw, lambda: client.cancel_run(parent))
    for run_id in (parent, *children, grandchild):
        assert status_of(raw, client, run_id) == "canceled"
    assert singles == 1  # the parent's own cancel; its children's went in a pipeline
    assert counts.get("sscan", 0) == 2, counts  # the parent and the child with a child
