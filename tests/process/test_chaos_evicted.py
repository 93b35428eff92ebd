"""Chaos: Redis loses one run's hash while the run holds its workflow's
``max_concurrency`` slot (an eviction under ``allkeys-lru``: a suspended run's
hash is among the coldest keys; or a ``DEL`` by hand). The run is lost (Redis
lost it), but the workflow must not be blocked for good: at the default
``max_concurrency`` (1) its slot was the only one, and the runs enqueued after
the loss waited forever. Likewise a parent suspended on such a child in
``step.run_workflow`` slept for good, and every durable sleep once the
``timers`` key was lost. Supervisor at its defaults."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunFailedError
from tests.helpers import texts
from tests.process.conftest import Supervisor, wait_until
from tests.process.flows_chaos import busy, gated, gated_parent

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


def _status(client: Client, run_id: str) -> str | None:
    state = client.get_run(run_id)
    return None if state is None else state.status


def test_a_slot_held_by_a_run_redis_lost_is_freed(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    sleeper = client.enqueue_workflow(gated, 3600)  # suspends for an hour, holding the slot
    wait_until(lambda: _status(client, sleeper.id) == "suspended", 20, message="suspended")
    assert raw.smembers(k.wf_running("gated")) == {sleeper.id.encode()}

    # What an eviction does to the coldest keys: the run's hash and steps go,
    # the workflow's gate (touched at every claim of the workflow) stays.
    assert raw.delete(k.run(sleeper.id), k.run_steps(sleeper.id)) == 2

    later = client.enqueue_workflow(gated, 0)
    # Before the fix: ResultTimeoutError, the run stayed queued (parked behind
    # the lost run's slot) for good.
    assert later.result(timeout=30) == "done"
    assert sleeper.id.encode() not in raw.smembers(k.wf_running("gated"))
    wait_until(
        lambda: f"run {sleeper.id} held a max_concurrency slot of workflow gated" in sup.log(),
        10,
        message="the warning naming the freed slot",
    )


def test_a_parent_waiting_for_a_child_redis_lost_is_woken(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    parent = client.enqueue_workflow(gated_parent, 3600)  # its child sleeps for an hour
    wait_until(lambda: raw.zcard(k.runs_status("suspended")) == 2, 20, message="both suspended")
    (child,) = texts(raw.smembers(k.run_awaits(parent.id)))
    assert _status(client, child) == "suspended"

    # The child's hash and steps evicted (or deleted): it will never finish.
    assert raw.delete(k.run(child), k.run_steps(child)) == 2

    # Before the fix: ResultTimeoutError, the parent stayed suspended for good.
    with pytest.raises(RunFailedError, match=f"child run {child} no longer exists"):
        parent.result(timeout=60)
    # The sweep logs after its script woke the parent: a child may have claimed,
    # replayed and failed the parent before that line reached the log (a loaded
    # run found it missing when result() returned).
    line = f"run {parent.id} waited for its children, which is gone from Redis"
    wait_until(lambda: line in sup.log(), 60, message="the sweep's warning")


def test_a_sleeping_run_whose_timer_redis_lost_wakes(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    sleeper = client.enqueue_workflow(gated, 3)  # a 3 s durable sleep
    wait_until(lambda: _status(client, sleeper.id) == "suspended", 20, message="suspended")
    assert raw.zscore(k.timers, sleeper.id) is not None

    # The one `timers` key evicted (or deleted): every sleeping run's wake-up time.
    assert raw.delete(k.timers) == 1

    # Before the fix: ResultTimeoutError, the run stayed suspended for good.
    assert sleeper.result(timeout=60) == "done"
    assert "suspended runs had no wake-up time" in sup.log()


def test_a_running_run_whose_lease_entry_redis_lost_is_taken_back(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_chaos"])
    sup.wait_workers(2)
    k = client.keys
    run = client.enqueue_workflow(busy, 4)  # one step of 4 s
    wait_until(lambda: raw.zscore(k.leases, run.id) is not None, 20, message="leased")

    # The `leases` key evicted (or deleted) while the run is in its step: the
    # holder's next renewal finds its lease lost and gives the run up, unless the
    # reaper's page (at start, then once a minute, and when the served queues
    # change) gave the entry back first: then the holder renews it and goes on.
    # Either way the run ends; nothing is waited for in between.
    assert raw.delete(k.leases) == 1

    # Before the fix: ResultTimeoutError, the run stayed running (no lease entry,
    # so the reaper never saw it) for good.
    assert run.result(timeout=100) == "worked"
    assert "running runs had no entry in" in sup.log()
