"""The cancel cascade and a child found by an ``idempotency_key``.

``step.run_workflow(..., idempotency_key=K)`` in several parents awaits one run
(the first parent started it; the others found it by its key), and a key that a
client used for ``run()`` makes a parent await that client's run. Each parent
records the run in its ``run:<id>:children`` (the cascade's list), so the cancel
of ANY one of them canceled the shared run: every other parent awaiting it
failed with ``RunCanceledError``, and a run a client started was canceled by a
parent it never belonged to. The cascade now cancels only the parent's own
children (their ``parentRunId``); the runs it merely awaits go on."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from redflow_mp import Client, Context, Registry, RunStatus, define_workflow
from redflow_mp.aio import create_async_client
from tests.helpers import WorkerPool, wait_until


def _flows(registry: Registry) -> tuple[Any, Any]:
    @define_workflow("gate", queue="main", max_concurrency=100, registry=registry)
    def gate(ctx: Context[Any]) -> str:
        return str(ctx.step.wait_for_event("open", "open"))

    @define_workflow("sharer", queue="main", max_concurrency=100, registry=registry)
    def sharer(ctx: Context[Any]) -> str:
        return str(ctx.step.run_workflow("gate", gate, None, idempotency_key=str(ctx.input)))

    return gate, sharer


def _status(client: Client, run_id: str) -> RunStatus | None:
    state = client.get_run(run_id)
    return None if state is None else state.status


def test_canceling_one_parent_leaves_the_child_it_shares_with_others(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    _, sharer = _flows(registry)
    client.sync_registry(registry, app="t")
    workers.start()
    parents = [sharer.run("k", client=client) for _ in range(3)]
    suspended = client.keys.runs_status("suspended")
    wait_until(lambda: raw.zcard(suspended) == 4, 20, message="3 parents and the gate suspended")
    [gate] = client.list_runs(workflow="gate")
    assert gate.parent_run_id is not None
    creator = next(h for h in parents if h.id == gate.parent_run_id)
    others = [h for h in parents if h is not creator]
    assert client.cancel_run(others[0].id, "this one only") is True
    assert _status(client, others[0].id) == RunStatus.CANCELED
    # before: assert <RunStatus.CANCELED> == <RunStatus.SUSPENDED>
    assert _status(client, gate.id) == RunStatus.SUSPENDED
    assert client.send_event(gate.id, "open", "opened") is True
    assert creator.result(timeout=20) == "opened"
    assert others[1].result(timeout=20) == "opened"
    # the creator's own cancel still cascades to the child it started
    again = [sharer.run("k2", client=client) for _ in range(2)]
    wait_until(lambda: raw.zcard(suspended) == 3, 20, message="2 parents and the gate suspended")
    [gate2] = [g for g in client.list_runs(workflow="gate") if g.id != gate.id]
    owner = next(h for h in again if h.id == gate2.parent_run_id)
    assert client.cancel_run(owner.id) is True
    wait_until(lambda: _status(client, gate2.id) == RunStatus.CANCELED, 10, message="cascade")


def test_a_parent_awaiting_a_clients_run_by_its_key_does_not_cancel_it(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    gate, sharer = _flows(registry)
    client.sync_registry(registry, app="t")
    workers.start()
    mine = gate.run(None, client=client, idempotency_key="order-1")  # the client's run
    parent = sharer.run("order-1", client=client)
    suspended = client.keys.runs_status("suspended")
    wait_until(lambda: raw.zcard(suspended) == 2, 20, message="the parent and the run suspended")
    assert client.cancel_run(parent.id) is True
    # before: assert <RunStatus.CANCELED> == <RunStatus.SUSPENDED>
    assert _status(client, mine.id) == RunStatus.SUSPENDED
    assert client.send_event(mine.id, "open", "mine") is True
    assert mine.result(timeout=20) == "mine"


def test_the_async_clients_cancel_leaves_the_child_a_parent_shares(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis, redis_url: str
) -> None:
    _, sharer = _flows(registry)
    client.sync_registry(registry, app="t")
    workers.start()
    parents = [sharer.run("k", client=client) for _ in range(2)]
    suspended = client.keys.runs_status("suspended")
    wait_until(lambda: raw.zcard(suspended) == 3, 20, message="2 parents and the gate suspended")
    [gate] = client.list_runs(workflow="gate")
    other = next(h for h in parents if h.id != gate.parent_run_id)

    async def cancel() -> bool:
        aclient = create_async_client(redis_url, prefix=client.keys.prefix)
        try:
            return await aclient.cancel_run(other.id)
        finally:
            await aclient.aclose()

    assert asyncio.run(cancel()) is True
    # before: assert <RunStatus.CANCELED> == <RunStatus.SUSPENDED>
    assert _status(client, gate.id) == RunStatus.SUSPENDED
