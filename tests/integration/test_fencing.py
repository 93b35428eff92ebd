"""Fencing: a worker whose lease was taken over (lease overwritten with another
token while its handler runs) cannot change the run: no step record, no
finish, no retry; the heartbeat notices and sets ctx.cancelled."""

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
    LeaseLostError,
    Registry,
    Retries,
    define_workflow,
)
from tests.helpers import WorkerPool, status_of, wait_until

pytestmark = pytest.mark.timeout(60)

THIEF = "another-workers-token"


class Gate:
    """Handler-side rendezvous: the handler says it started, then waits to go on."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.result: list[Any] = []


@pytest.fixture()
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.go.set()


def _snapshot(raw: redis.Redis, client: Client, run_id: str) -> dict[str, Any]:
    h = raw.hgetall(client.keys.run(run_id))
    h.pop(b"updatedAt", None)
    return {"run": h, "steps": raw.hgetall(client.keys.run_steps(run_id))}


def _steal(raw: redis.Redis, client: Client, run_id: str) -> None:
    raw.hset(client.keys.run(run_id), "lease", THIEF)


def test_stolen_lease_blocks_step_writes(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, gate: Gate
) -> None:
    ran: list[str] = []

    @define_workflow("victim", registry=registry)
    def victim(ctx: Context[Any]) -> str:
        ctx.step.run("before", lambda: "b")
        gate.started.set()
        gate.go.wait(10)
        try:
            ctx.step.run("after", lambda: ran.append("after"))
        except LeaseLostError as exc:
            gate.result.append(exc)
            raise
        return "finished"

    @define_workflow("marker0", registry=registry)
    def marker(ctx: Context[Any]) -> str:
        return "next"

    # long lease: the heartbeat does not run during the test, so the fenced
    # step write itself is what detects the loss
    workers.start(lease_ms=60_000)
    handle = victim.run()
    assert gate.started.wait(10)
    _steal(raw, client, handle.id)
    before = _snapshot(raw, client, handle.id)
    gate.go.set()
    wait_until(lambda: gate.result, 10, message="LeaseLostError in the handler")
    assert isinstance(gate.result[0], LeaseLostError)
    # the step's `running` record was refused before it ran: no side effects
    assert ran == []
    # the worker has moved on (one worker: the marker runs after the victim)
    assert marker.run().result(timeout=10) == "next"
    assert _snapshot(raw, client, handle.id) == before
    assert status_of(raw, client, handle.id) == "running"
    assert raw.hget(client.keys.run(handle.id), "lease") == THIEF.encode()
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["before"]


def test_a_pause_after_the_running_record_was_sent_is_caught_before_the_step_runs(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `running` record proves the lease as of its *send*: a worker paused
    (SIGSTOP) right after sending it, whose lease another worker took over meanwhile,
    must not run the step when it resumes (a renewal decides)."""
    ran: list[str] = []
    errors: list[BaseException] = []
    real = client.scripts.write_step

    def paused_after_send(
        run_id: str, token: str, name: str, record: bytes, lease_ms: int, **kw: Any
    ) -> Any:
        reply = real(run_id, token, name, record, lease_ms, **kw)
        if name == "side-effect" and b'"running"' in record:
            raw.hset(client.keys.run(run_id), "lease", THIEF)  # taken over meanwhile
            time.sleep(lease_ms / 1000 * 0.8)  # this worker was stopped that long
        return reply

    monkeypatch.setattr(client.scripts, "write_step", paused_after_send)

    @define_workflow("paused", registry=registry)
    def paused(ctx: Context[Any]) -> None:
        try:
            ctx.step.run("side-effect", lambda: ran.append("side-effect"))
        except LeaseLostError as exc:
            errors.append(exc)
            raise

    workers.start(lease_ms=1_500)
    handle = paused.run()
    wait_until(lambda: errors, 10, message="LeaseLostError before the step")
    assert ran == []
    assert status_of(raw, client, handle.id) == "running"  # left to the thief


def test_a_pause_between_the_claim_and_the_handler_is_caught_before_the_handler_starts(
    raw: redis.Redis,
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker stopped (SIGSTOP) right after its claim, whose run another worker
    took over meanwhile, must not start the handler when it resumes: not one line
    of it may run beside the new holder's execution (a renewal decides)."""
    started: list[str] = []
    real = client.scripts.claim

    def paused_after_claim(*args: Any, **kwargs: Any) -> Any:
        result, claimed = real(*args, **kwargs)
        if claimed is not None and claimed.workflow == "late-start":
            raw.hset(client.keys.run(claimed.id), "lease", THIEF)  # taken over meanwhile
            time.sleep(args[1] / 1000 * 0.8)  # this worker was stopped that long
        return result, claimed

    monkeypatch.setattr(client.scripts, "claim", paused_after_claim)

    @define_workflow("late-start", registry=registry)
    def late_start(ctx: Context[Any]) -> None:
        started.append(ctx.run.id)

    @define_workflow("marker3", registry=registry)
    def marker(ctx: Context[Any]) -> str:
        return "next"

    workers.start()  # the default lease (5 s)
    handle = late_start.run()
    # the worker has moved on (one worker: the marker runs after the stopped run)
    assert marker.run().result(timeout=20) == "next"
    assert started == []
    assert status_of(raw, client, handle.id) == "running"  # left to the thief
    assert raw.hget(client.keys.run(handle.id), "lease") == THIEF.encode()


def test_stolen_lease_blocks_the_finish(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, gate: Gate
) -> None:
    finished = threading.Event()

    @define_workflow("no-finish", registry=registry)
    def no_finish(ctx: Context[Any]) -> str:
        gate.started.set()
        gate.go.wait(10)
        finished.set()
        return "my result"

    @define_workflow("marker", registry=registry)
    def marker(ctx: Context[Any]) -> str:
        return "next"

    workers.start(lease_ms=60_000)
    handle = no_finish.run()
    assert gate.started.wait(10)
    _steal(raw, client, handle.id)
    before = _snapshot(raw, client, handle.id)
    gate.go.set()
    assert finished.wait(10)
    # the worker sends its (fenced) finish together with the next claim
    assert marker.run().result(timeout=10) == "next"
    assert _snapshot(raw, client, handle.id) == before
    assert raw.hget(client.keys.run(handle.id), "outputJson") is None
    assert status_of(raw, client, handle.id) == "running"
    assert raw.hget(client.keys.run(handle.id), "lease") == THIEF.encode()
    assert raw.sismember(client.keys.wf_running("no-finish"), handle.id)


def test_stolen_lease_blocks_the_retry(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, gate: Gate
) -> None:
    @define_workflow(
        "no-retry",
        retries=Retries(max_attempts=3, initial_delay=0, jitter=0),
        registry=registry,
    )
    def no_retry(ctx: Context[Any]) -> None:
        gate.started.set()
        gate.go.wait(10)
        raise ValueError("would be retried")

    @define_workflow("marker2", registry=registry)
    def marker(ctx: Context[Any]) -> str:
        return "next"

    workers.start(lease_ms=60_000)
    handle = no_retry.run()
    assert gate.started.wait(10)
    _steal(raw, client, handle.id)
    before = _snapshot(raw, client, handle.id)
    gate.go.set()
    assert marker.run().result(timeout=10) == "next"
    assert _snapshot(raw, client, handle.id) == before
    assert raw.hget(client.keys.run(handle.id), "attempt") == b"1"
    assert not raw.exists(client.keys.q_scheduled("default"))
    assert status_of(raw, client, handle.id) == "running"


def test_heartbeat_notices_the_stolen_lease(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool, gate: Gate
) -> None:
    @define_workflow("watched", registry=registry)
    def watched(ctx: Context[Any]) -> str:
        gate.started.set()
        if not ctx.cancelled.wait(10):
            return "not noticed"
        try:
            ctx.raise_if_cancelled()
        except LeaseLostError as exc:
            gate.result.append(exc)
            raise
        return "no error"

    workers.start(lease_ms=600)
    handle = watched.run()
    assert gate.started.wait(10)
    _steal(raw, client, handle.id)
    wait_until(lambda: gate.result, 5, message="heartbeat to notice the lost lease")
    assert isinstance(gate.result[0], LeaseLostError)
    # the thief's lease was not extended or removed by the old holder
    assert raw.hget(client.keys.run(handle.id), "lease") == THIEF.encode()
    assert status_of(raw, client, handle.id) == "running"


def test_the_heartbeat_survives_a_huge_lease(client: Client) -> None:
    """lease_ms is bounded below only (settings: >= 300): a lease of 1e17 ms made
    the heartbeat thread's Event.wait(lease / 3) raise OverflowError, and the
    thread died on its first wait: no renewal, no cancel notice, ever."""
    from redflow_mp.lease import LeaseKeeper

    keeper = LeaseKeeper(client.renew, 10**17)
    try:
        keeper.hold("no-such-run", "token", lambda: None, lambda: None)
        time.sleep(0.2)
        assert keeper._thread is not None and keeper._thread.is_alive()
    finally:
        keeper.stop()
