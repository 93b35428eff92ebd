"""Retention and a child shared by idempotency key: parents that found an existing
child by its ``idempotency_key`` (``run_workflow(s)(..., idempotency_key=)``)
await it as its first parent does, so retention keeps it while any of them has
not finished (``sweep_runs.lua``), not only while the parent that created it
(its ``parentRunId``) waits.

Retention passes are the ``sweep_runs`` script the retention duty sends, with a
retention of 1 ms standing for the default 7 days having passed."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def _sweep_all(client: Client) -> None:
    while client.scripts.sweep(1, 100) == 100:
        pass


def _past_finish(client: Client, run_id: str) -> None:
    def past() -> bool:
        state = client.get_run(run_id)
        assert state is not None and state.finished_at is not None
        return client.server_time_ms() > state.finished_at + 2

    wait_until(past, timeout=5)


def test_a_shared_child_is_kept_while_another_parent_still_awaits_it(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    """Parents A and B await one child through the same key; the child finishes,
    A reads it and finishes, B is woken but its queue has no worker for a week.
    Retention used to look at the child's parentRunId (A, finished) alone and
    removed it: B then failed with "child run ... no longer exists"."""

    @define_workflow("sh-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("done", "done")
        return 10

    @define_workflow("sh-first", registry=registry)
    def first(ctx: Context[Any]) -> int:
        return int(ctx.step.run_workflow("one", child, 1, idempotency_key="shared"))

    @define_workflow("sh-second", registry=registry, queue="sh-slow")
    def second(ctx: Context[Any]) -> int:
        return int(ctx.step.run_workflow("one", child, 1, idempotency_key="shared"))

    workers.start(queues=["default"])
    slow = WorkerPool(client)
    slow.start(queues=["sh-slow"])
    try:
        a = first.run()
        wait_until(lambda: run_status(client, a.id) == "suspended", timeout=10)
        b = second.run()
        wait_until(lambda: run_status(client, b.id) == "suspended", timeout=10)
    finally:
        slow.stop_all()  # B's queue: no worker from here on
    kids = [s.id for s in client.list_runs(workflow="sh-child")]
    assert len(kids) == 1
    kid = kids[0]
    state = client.get_run(kid)
    assert state is not None and state.parent_run_id == a.id
    wait_until(lambda: run_status(client, kid) == "suspended", timeout=10)
    assert client.send_event(kid, "done") is True
    assert a.result(timeout=20) == 10
    wait_until(lambda: run_status(client, b.id) == "queued", timeout=10)
    _past_finish(client, a.id)
    _sweep_all(client)  # a week later: A's and the child's retention are over
    assert client.get_run(a.id) is None  # the first parent goes
    # the child stays while B awaits it (before: None)
    assert run_status(client, kid) == "succeeded"
    slow.start(queues=["sh-slow"])
    try:
        assert b.result(timeout=20) == 10
    finally:
        slow.stop_all()
    _past_finish(client, b.id)

    def all_gone() -> bool:
        _sweep_all(client)
        return client.get_run(kid) is None and client.get_run(b.id) is None

    wait_until(all_gone, timeout=5)
    assert not raw.keys(f"{client.keys.tag}:run:{kid}*")
