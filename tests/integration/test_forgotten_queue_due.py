"""A queue forgotten by the retention duty leaves no entry in ``due-queues``.

The promoter drops a queue's ``due-queues`` entry only when the entry comes due.
A run scheduled far ahead (``run_at`` up to the year 3000) and canceled left its
queue's entry until then: forget_queues dropped the name from ``queues`` (and its
bell), yet every queue ever used so stayed in ``due-queues`` for good (5,000
per-tenant queues of canceled reminders: 5,000 entries after retention removed
every run)."""

from __future__ import annotations

import time

import pytest
import redis

from redflow_mp import Client, Registry, define_workflow
from redflow_mp.maintenance import forget_idle_queues
from redflow_mp.options import MAX_RUN_AT
from redflow_mp.store import stores
from tests.helpers import texts

pytestmark = pytest.mark.timeout(60)


def test_a_forgotten_queue_leaves_due_queues_too(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    define_workflow("remind", registry=registry)(lambda ctx: None)
    k = client.keys
    names = [f"tenant-{i}" for i in range(300)]  # more than one page of `queues`
    for i, q in enumerate(names):
        run_at = MAX_RUN_AT - 1 if i % 2 else time.time() + 3600
        handle = client.run_by_name("remind", {"i": i}, queue_override=q, run_at=run_at)
        assert client.cancel_run(handle.id) is True
    kept = client.run_by_name("remind", None, queue_override="still-due", run_at=MAX_RUN_AT - 1)
    assert raw.zcard(k.due_queues) == 301
    store = stores(client)[0]
    cursor, gone = 0, []
    for _ in range(50):
        cursor, page, _stranded = forget_idle_queues(store, [], cursor)
        gone += page
        if cursor == 0:
            break
    assert sorted(gone) == sorted(names)
    assert not raw.sismember(k.queues, "tenant-1")
    # only the queue that still holds a scheduled run keeps its entry
    assert texts(raw.zrange(k.due_queues, 0, -1)) == ["still-due"]
    assert client.get_run(kept.id) is not None
    # a forgotten queue scheduled again is due again
    client.run_by_name("remind", None, queue_override="tenant-3", run_at=time.time() + 60)
    assert raw.zscore(k.due_queues, "tenant-3") is not None


def test_a_queue_key_of_another_type_does_not_stop_forgetting(
    raw: redis.Redis, client: Client
) -> None:
    """A ready or scheduled key of another type (a neighbour's key, a v1 ready list
    left behind) failed the whole forget_queues call with WRONGTYPE, each time on the
    same page: the retention duty's cursor never moved past it, so no idle queue
    name was forgotten again (and the duty's tick raised before its other work)."""
    k = client.keys
    idle = [f"idle-{i}" for i in range(50)]
    raw.sadd(k.queues, *idle, "odd-ready", "odd-scheduled")
    raw.set(k.q_ready("odd-ready"), "not a zset")
    raw.rpush(k.q_scheduled("odd-scheduled"), "not a zset")
    store = stores(client)[0]
    cursor, gone = 0, []
    for _ in range(50):
        cursor, page, _stranded = forget_idle_queues(store, [], cursor)
        gone += page
        if cursor == 0:
            break
    assert sorted(gone) == sorted(idle)
    # what such a queue holds is unknown: it is kept (named by the key check)
    assert texts(raw.smembers(k.queues)) in (
        ["odd-ready", "odd-scheduled"],
        ["odd-scheduled", "odd-ready"],
    )
