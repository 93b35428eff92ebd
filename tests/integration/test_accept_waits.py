"""Acceptance and attacker probes of durable waits and the client (issues 12, 15)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    Registry,
    RunCanceledError,
    StepTimeoutError,
    create_client,
    define_workflow,
)
from redflow_mp.errors import RedflowError, ResultTimeoutError, WaitDeadlockError
from redflow_mp.waits import WaitMixin
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def test_send_event_to_a_canceled_run_is_false_and_stores_nothing(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    @define_workflow("aw-ev-cancel", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    workers.start()
    h = flow.run()
    wait_until(lambda: run_status(client, h.id) == "suspended", timeout=10)
    assert h.cancel() is True
    assert run_status(client, h.id) == "canceled"
    assert h.send_event("go", 1) is False
    assert not raw.exists(client.keys.run_events(h.id, "go"))
    with pytest.raises(RunCanceledError):
        h.result(timeout=5)
    # a queued run canceled before it ever ran
    h2 = flow.run(run_at=time.time() + 3600)
    assert h2.cancel() is True
    assert h2.send_event("go", 1) is False
    assert not raw.exists(client.keys.run_events(h2.id, "go"))


def test_wait_for_event_timeout_then_event_after_it(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("aw-ev-late", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        with contextlib.suppress(StepTimeoutError):
            ctx.step.wait_for_event("w", "go", timeout=0.3)
        return ctx.step.wait_for_event("w2", "go")

    workers.start()
    h = flow.run()
    wait_until(
        lambda: (
            (s := client.get_run(h.id)) is not None
            and s.wait is not None
            and s.wait.steps == ["w2"]
        ),
        timeout=10,
    )
    assert h.send_event("go", "late") is True
    assert h.result(timeout=10) == "late"


def test_same_event_name_two_waits_in_gather(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("aw-ev-gather", registry=registry)
    async def flow(ctx: Any) -> Any:
        a, b = await asyncio.gather(
            ctx.step.wait_for_event("a", "go"), ctx.step.wait_for_event("b", "go")
        )
        return [a, b]

    workers.start()
    h = flow.run()
    wait_until(lambda: run_status(client, h.id) == "suspended", timeout=10)
    assert h.send_event("go", 1) is True
    wait_until(lambda: run_status(client, h.id) == "suspended", timeout=10)
    assert h.send_event("go", 2) is True
    assert sorted(h.result(timeout=10)) == [1, 2]


def test_event_payload_none_and_falsy(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("aw-ev-none", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        return [ctx.step.wait_for_event(f"w{i}", "go") for i in range(4)]

    workers.start()
    h = flow.run()
    payloads: tuple[Any, ...] = (None, 0, "", [])
    for p in payloads:
        assert h.send_event("go", p) is True
    assert h.result(timeout=10) == [None, 0, "", []]


def test_run_workflows_with_two_thousand_children(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("aw-kid", registry=registry, max_concurrency=100)
    def kid(ctx: Context[Any]) -> int:
        return int(ctx.input) + 1

    @define_workflow("aw-fan", registry=registry)
    def fan(ctx: Context[Any]) -> int:
        return sum(ctx.step.run_workflows("all", kid, list(range(2000))))

    workers.start()
    workers.start()
    assert fan.run().result(timeout=50) == sum(range(1, 2001))


def test_idempotency_key_reused_with_other_input_returns_the_first_run(
    client: Client, registry: Registry
) -> None:
    @define_workflow("aw-idem", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        return ctx.input

    a = flow.run({"x": 1}, idempotency_key="k")
    b = flow.run({"x": 2}, idempotency_key="k")
    assert a.id == b.id
    s = client.get_run(b.id)
    assert s is not None and s.input == {"x": 1}


def test_cancel_of_a_sleeping_run_and_resume(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("aw-sleep-cancel", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        ctx.step.sleep("nap", 0.5)
        return ctx.run.attempt

    workers.start()
    h = flow.run()
    wait_until(lambda: run_status(client, h.id) == "suspended", timeout=10)
    assert client.cancel_run(h.id) is True
    assert run_status(client, h.id) == "canceled"
    h2 = client.resume_run(h.id)
    assert h2.result(timeout=10) == 2


def test_two_parents_filling_their_limit_at_once_do_not_both_suspend_for_good(
    client: Client, registry: Registry, workers: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    barrier = threading.Barrier(2, timeout=10)
    # Both parents pass the deadlock check before either suspends: two workers
    # (two hosts) at the same point, as a loaded machine or a slow network makes it.
    checked = threading.Barrier(2, timeout=10)
    check = WaitMixin._check_deadlock

    met: list[int] = []

    def check_then_meet(self: Any, *args: Any) -> None:
        check(self, *args)
        met.append(1)
        if len(met) <= 2:  # the first check of each parent
            checked.wait()

    monkeypatch.setattr(WaitMixin, "_check_deadlock", check_then_meet)

    @define_workflow("aw-dl-pair", registry=registry, max_concurrency=2)
    def selfish(ctx: Context[Any]) -> Any:
        if ctx.input == "child":
            return "child ran"
        ctx.step.run("meet", barrier.wait)
        try:
            return ctx.step.run_workflow("me", selfish, "child")
        except WaitDeadlockError as exc:
            return "deadlock: " + str(exc)

    workers.start()
    workers.start()
    a = selfish.run("a")
    b = selfish.run("b")
    outs = sorted([a.result(timeout=20), b.result(timeout=20)])
    assert outs[0] == "child ran" and outs[1].startswith("deadlock: ")


def test_close_tells_a_result_waiting_in_another_thread_at_once(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow("aw-close-idle", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    c = create_client(redis_url, prefix=prefix, registry=registry, default=False)
    h = idle.run(None, client=c)
    got: list[BaseException] = []

    def wait() -> None:
        try:
            h.result()  # no timeout: never finishes (no worker)
        except BaseException as exc:
            got.append(exc)

    def wait_again() -> None:  # this thread's connections are open before close()
        with contextlib.suppress(ResultTimeoutError):
            h.result(timeout=0.05)
        opened.set()
        again.wait(10)
        try:
            h.result(timeout=1)
        except BaseException as exc:
            got.append(exc)

    again, opened = threading.Event(), threading.Event()
    other = threading.Thread(target=wait_again, daemon=True)
    other.start()
    assert opened.wait(10)
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    channel = c.keys.run_done(h.id)
    wait_until(lambda: raw.pubsub_numsub(channel)[0][1] == 1, timeout=10)
    closed_at = time.monotonic()
    c.close()
    waiter.join(10)
    assert not waiter.is_alive(), "result() still waited 10 s after close()"
    assert time.monotonic() - closed_at < 5
    again.set()
    other.join(10)
    assert len(got) == 2, got
    for exc in got:
        assert isinstance(exc, RedflowError) and "is closed" in str(exc), got
    with pytest.raises(RedflowError, match="is closed"):
        h.send_event("x")


def test_a_cancel_cascade_cut_by_a_redis_blip_still_cancels_the_children(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    make_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @define_workflow("aw-orphan-child", registry=registry)
    def child(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("forever", "never")

    @define_workflow("aw-orphan-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("kid", child, None)

    # The cancel arrives while the parent's wait starts its child (the worker
    # then ends the parent canceled at its suspension, and cascades).
    other = make_client()
    start = WaitMixin._start_children

    def start_then_cancel(self: Any, *args: Any) -> list[str]:
        ids: list[str] = start(self, *args)
        # The cancel script alone (a request on the running parent): the client's
        # own cascade (cancel_run walks the children too) would race the worker's
        # and make the worker's cascade, the path under test, redundant.
        assert other.scripts_for(self._ex.run_id).cancel(self._ex.run_id, "") == "running"
        return ids

    monkeypatch.setattr(WaitMixin, "_start_children", start_then_cancel)
    worker = workers.start(client=make_client())
    # the cascade's first round trip meets a connection reset (a Redis blip)
    cascade = worker.client.cancel_children
    blips: list[str] = []

    def blip_once(run_id: str, reason: str | None = None) -> int:
        if not blips:
            blips.append(run_id)
            raise redis.ConnectionError("Connection reset by peer")
        return cascade(run_id, reason)

    monkeypatch.setattr(worker.client, "cancel_children", blip_once)
    h = parent.run()
    with pytest.raises(RunCanceledError):
        h.result(timeout=20)
    # result() answers once the suspend script ended the parent canceled; the
    # worker's cascade (the path under test) comes right after, in its thread.
    wait_until(lambda: blips == [h.id], timeout=10)
    kids = client.list_runs(workflow="aw-orphan-child")
    assert len(kids) == 1
    # before: the child stayed suspended for good, holding its workflow's only slot
    wait_until(lambda: run_status(client, kids[0].id) == "canceled", timeout=10)


def test_the_clients_take_url_and_prefix_as_issue_15_spells_them(
    redis_url: str, prefix: str, registry: Registry, client: Client
) -> None:
    """Issue 15: ``create_async_client(url, prefix, ...)``; SPEC §2 passes them by
    keyword. Both work, for both clients."""
    from redflow_mp.aio import create_async_client

    @define_workflow("aw-positional", registry=registry)
    def flow(ctx: Context[Any]) -> None:
        return None

    h = flow.run(None, client=client)

    async def body() -> None:
        ac = create_async_client(redis_url, prefix, registry=registry, default=False)
        try:
            state = await ac.get_run(h.id)
            assert state is not None and state.id == h.id
        finally:
            await ac.aclose()

    asyncio.run(body())
    sync = create_client(redis_url, prefix, registry=registry, default=False)
    try:
        state = sync.get_run(h.id)
        assert state is not None and state.id == h.id
    finally:
        sync.close()
