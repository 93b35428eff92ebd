"""Retention and a fan-out whose children live in another shard (``shards > 1``):
``sweep_runs.lua`` keeps a finished ``run_workflow(s)`` child while its parent
has not finished by reading the parent's status, which it can only do in the
child's own shard. A parent in another shard read as absent, and the child
that finished first was removed while the parent still waited for the others:
the parent then failed with "child run ... no longer exists (removed by
retention?)". The script now keeps such a child and names the pair; the
retention duty (``maintenance.sweep_backlog``) asks the parent's shard and
passes the pairs whose parent finished (or is gone) back, and the next call
removes the child: kept while awaited, never for good.

Retention passes are what the retention duty sends, with a retention of 1 ms
standing for the default 7 days having passed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.maintenance import stores, sweep_backlog
from redflow_mp.shards import shard_index_of_workflow
from supervisor.duties.retention import RetentionDuty
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def _is(client: Client, run_id: str, status: str) -> Callable[[], bool]:
    return lambda: run_status(client, run_id) == status


def _sweep(client: Client, only: int | None = None) -> None:
    """Retention passes over every shard (or shard ``only``) until none is left."""
    shards = stores(client)
    for i, store in enumerate(shards):
        if only is not None and i != only:
            continue
        for _ in range(50):
            if not sweep_backlog(store, 1, 100, shards=shards)[1]:
                break


def _fan_out(client: Client, registry: Registry) -> tuple[WorkerPool, Any, list[str]]:
    """A parent (shard 0) suspended on two children (shard 1) waiting for events."""
    assert shard_index_of_workflow("xs-kid", 2) == 1
    assert shard_index_of_workflow("xs-boss", 2) == 0

    @define_workflow("xs-kid", registry=registry, max_concurrency=4)
    def kid(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("done", "done")
        return int(ctx.input) * 10

    @define_workflow("xs-boss", registry=registry)
    def boss(ctx: Context[Any]) -> list[Any]:
        return list(ctx.step.run_workflows("kids", kid, [1, 2]))

    workers = WorkerPool(client)
    workers.start()
    handle = boss.run(client=client)
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    states = client.list_runs(workflow="xs-kid")
    kids = [s.id for s in sorted(states, key=lambda s: int(s.input))]
    assert len(kids) == 2
    for k in kids:
        wait_until(_is(client, k, "suspended"), timeout=10)
    assert client.send_event(kids[0], "done") is True
    wait_until(lambda: run_status(client, kids[0]) == "succeeded", timeout=10)
    time.sleep(0.01)  # past its finish by more than the 1 ms retention
    return workers, handle, kids


def test_a_child_in_another_shard_is_kept_while_its_parent_waits(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    client = make_client(shards=2)
    workers, handle, kids = _fan_out(client, registry)
    try:
        _sweep(client)  # a week later (retention 1 ms)
        # kept while the parent waits (as in one shard: test_waits_retention.py;
        # before: None, and the parent failed "child run ... no longer exists")
        assert run_status(client, kids[0]) == "succeeded"
        duty = RetentionDuty(client, retention_s=0.001)  # the supervisor's duty too
        for _ in range(3):
            duty.tick(time.monotonic())
        assert run_status(client, kids[0]) == "succeeded"
        assert client.send_event(kids[1], "done") is True
        assert handle.result(timeout=20) == [10, 20]
    finally:
        workers.stop_all()


def test_a_child_in_another_shard_goes_once_its_parent_finished(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    """No leak: kept while awaited, removed by retention once the parent finished
    (read finished in its shard, still there) and when it is gone."""
    client = make_client(shards=2)
    workers, handle, kids = _fan_out(client, registry)
    try:
        _sweep(client)
        assert run_status(client, kids[0]) == "succeeded"  # kept, named once
        assert client.send_event(kids[1], "done") is True
        assert handle.result(timeout=20) == [10, 20]
    finally:
        workers.stop_all()
    time.sleep(0.01)
    _sweep(client, only=1)  # the children's shard first: the parent is finished, there
    assert run_status(client, handle.id) == "succeeded"
    assert [run_status(client, k) for k in kids] == [None, None]
    assert not client.shards[1].redis.keys(f"{client.shards[1].keys.tag}:run:{kids[0]}*")
    _sweep(client)
    assert run_status(client, handle.id) is None


def test_a_child_shared_with_a_parent_in_another_shard_is_kept_while_it_waits(
    make_client: Callable[..., Client], registry: Registry
) -> None:
    """A second parent in another shard found the child by its idempotency key
    (run:<child>:parents); the child's own parent (its shard) finishes first.
    The child stays while the second one awaits it (suspended: a finish reaches
    a sharer in another shard by its recheck timer), and goes once it is done."""
    client = make_client(shards=2)
    assert shard_index_of_workflow("xs-kid", 2) == 1
    assert shard_index_of_workflow("xs-near", 2) == 1
    assert shard_index_of_workflow("xs-second", 2) == 0

    @define_workflow("xs-kid", registry=registry)
    def kid(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("done", "done")
        return 10

    @define_workflow("xs-near", registry=registry)
    def near(ctx: Context[Any]) -> int:
        return int(ctx.step.run_workflow("one", kid, 1, idempotency_key="xs-shared"))

    @define_workflow("xs-second", registry=registry)
    def second(ctx: Context[Any]) -> int:
        return int(ctx.step.run_workflow("one", kid, 1, idempotency_key="xs-shared"))

    workers = WorkerPool(client)
    workers.start()
    try:
        a = near.run(client=client)
        wait_until(_is(client, a.id, "suspended"), timeout=10)
        b = second.run(client=client)
        wait_until(_is(client, b.id, "suspended"), timeout=10)
        kids = [s.id for s in client.list_runs(workflow="xs-kid")]
        assert len(kids) == 1
        k = kids[0]
        state = client.get_run(k)
        assert state is not None and state.parent_run_id == a.id
        wait_until(_is(client, k, "suspended"), timeout=10)
        assert client.send_event(k, "done") is True
        assert a.result(timeout=20) == 10
        time.sleep(0.01)
        _sweep(client)  # a week later: A goes, the child stays while B awaits it
        assert client.get_run(a.id) is None
        assert run_status(client, b.id) in ("suspended", "queued", "running")
        assert run_status(client, k) == "succeeded"  # (before: None)
        assert client.cancel_run(b.id) is True  # B done: the child is no one's any more
        wait_until(_is(client, b.id, "canceled"), timeout=10)
    finally:
        workers.stop_all()
    time.sleep(0.01)
    _sweep(client, only=1)
    # B, canceled, may be resumed and read the child again: kept while B is there
    assert run_status(client, k) == "succeeded"
    _sweep(client, only=0)
    assert run_status(client, b.id) is None
    time.sleep(0.01)
    _sweep(client, only=1)
    assert run_status(client, k) is None  # no leak
