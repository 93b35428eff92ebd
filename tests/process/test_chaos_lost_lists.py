"""Chaos: Redis loses a key that lists runs (a queue's ready or scheduled set,
``due-queues``, a workflow's waiting set; evicted under ``allkeys-lru`` or
deleted by hand or by a neighbour on the same Redis). The runs it listed keep
their records (``status=queued``, ``scheduled``), but every duty and claim reads
the lists only: before the fix nothing ever claimed or promoted them. The
leader's relist sweep (``relist_runs.lua``, a pass at start and every 30 s)
puts them back. Supervisor at its defaults."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import Supervisor, wait_until
from tests.process.flows_chaos import busy, gated, quick

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


def _status(client: Client, run_id: str) -> str | None:
    state = client.get_run(run_id)
    return None if state is None else state.status


def _logged(sup: Supervisor, line: str) -> None:
    """The relist duty's warning reaches the log: the parent writes it after the
    script that put the runs back returned, and children can run them first (the
    parent descheduled on a loaded machine: seen once in a full process run)."""
    wait_until(lambda: line in sup.log(), 20, message=f"{line!r} in the supervisor's log")


def test_queued_runs_whose_ready_set_redis_lost_still_run_in_priority_order(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, modules=["tests.process.flows_chaos"])
    sup.wait_workers(1)
    k = client.keys
    blocker = client.enqueue_workflow(busy, 3)  # the only worker is busy for 3 s
    wait_until(lambda: raw.zscore(k.leases, blocker.id) is not None, 20, message="busy")
    waiting = [client.enqueue_workflow(quick, i) for i in range(4)]
    urgent = client.enqueue_workflow(quick, "urgent", priority=5)
    assert raw.zcard(k.q_ready("chaos")) == 5

    # The queue's ready set evicted (or deleted): the runs' records stay queued.
    assert raw.delete(k.q_ready("chaos")) == 1
    assert blocker.result(timeout=30) == "worked"

    # Before the fix: ResultTimeoutError, nothing ever claimed them.
    assert urgent.result(timeout=90) == "urgent"
    assert [h.result(timeout=10) for h in waiting] == ["0", "1", "2", "3"]
    started = {h.id: int(raw.hget(k.run(h.id), "startedAt") or 0) for h in [urgent, *waiting]}
    assert min(started, key=lambda i: started[i]) == urgent.id  # its priority held
    _logged(sup, f"runs were missing from {k.q_ready('chaos')}")


def test_scheduled_runs_whose_scheduled_set_redis_lost_still_run(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    later = [client.enqueue_workflow(quick, i, run_at=time.time() + 3) for i in range(3)]
    assert raw.zcard(k.q_scheduled("chaos")) == 3

    # The scheduled set and due-queues evicted (or deleted).
    assert raw.delete(k.q_scheduled("chaos"), k.due_queues) == 2

    # Before the fix: ResultTimeoutError, the runs stayed scheduled for good.
    assert [h.result(timeout=90) for h in later] == ["0", "1", "2"]
    _logged(sup, f"runs were missing from {k.q_scheduled('chaos')}")


def test_parked_runs_whose_waiting_set_redis_lost_still_run(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    sleeper = client.enqueue_workflow(gated, 3)  # holds the only slot (max_concurrency 1)
    wait_until(lambda: _status(client, sleeper.id) == "suspended", 20, message="suspended")
    parked = [client.enqueue_workflow(gated, 0) for _ in range(3)]
    wait_until(
        lambda: raw.zcard(k.wf_waiting("gated")) == 3, 20, message="the runs parked behind it"
    )

    # The workflow's waiting set evicted (or deleted): its runs are queued in no set.
    assert raw.delete(k.wf_waiting("gated")) == 1
    assert sleeper.result(timeout=30) == "done"

    # Before the fix: ResultTimeoutError, the slot's release found nobody parked.
    assert [h.result(timeout=90) for h in parked] == ["done"] * 3
    _logged(sup, "runs were missing from")
