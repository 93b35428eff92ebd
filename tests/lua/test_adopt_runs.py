"""``adopt_runs.lua``: runs that went to ``default`` for want of their workflow's
metadata (``run_by_name`` while Redis had none: an empty restart before the
supervisor synced again) move to the workflow's queue once it is registered;
a run the caller put on ``default`` never moves; a call reads one page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, define_workflow

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def bare(make_client: Callable[..., Client]) -> Iterator[Client]:
    """A client without the code (an empty registry): ``run_by_name`` only."""
    yield make_client(registry=Registry())


def _register(client: Client, name: str, queue: str) -> None:
    reg = Registry()

    @define_workflow(name, queue=queue, registry=reg)
    def handler(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(reg, app="adopt-test")


def _adopt_all(client: Client, batch: int = 100) -> tuple[int, int, list[int]]:
    """Page through ``fallback-runs`` as the registry duty does: (moved, kept, reads)."""
    moved = kept = offset = 0
    reads = []
    while True:
        m, k, read = client.scripts.adopt_runs(batch, offset)
        moved, kept, offset = moved + m, kept + k, offset + k
        reads.append(read)
        if read < batch:
            return moved, kept, reads


def test_a_fallback_run_moves_to_its_workflows_queue_once_registered(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    k = client.keys
    ready = bare.run_by_name("adoptee", {"n": 1}, priority=3).id
    later = bare.run_by_name("adoptee", None, run_at=client.server_time_ms() / 1000 + 3600).id
    chosen = bare.run_by_name("adoptee", None, queue_override="default").id
    assert raw.hget(k.run(ready), "queueFallback") == b"1"
    assert raw.hget(k.run(later), "queueFallback") == b"1"
    assert raw.hget(k.run(chosen), "queueFallback") is None, "put on default by the caller"
    assert set(raw.zrange(k.fallback_runs, 0, -1)) == {ready.encode(), later.encode()}
    score = raw.zscore(k.q_ready("default"), ready)
    due = raw.zscore(k.q_scheduled("default"), later)

    # not registered yet: nothing moves, the entries stay
    assert client.scripts.adopt_runs(100) == (0, 2, 2)
    assert raw.zscore(k.q_ready("default"), ready) == score

    _register(client, "adoptee", "real")
    assert client.scripts.adopt_runs(100) == (2, 0, 2)
    assert raw.zscore(k.q_ready("real"), ready) == score, "same score: priority and order kept"
    assert raw.zscore(k.q_scheduled("real"), later) == due
    assert raw.zscore(k.q_ready("default"), ready) is None
    assert raw.zscore(k.q_scheduled("default"), later) is None
    assert raw.zscore(k.due_queues, "real") is not None
    # an idle worker of "real" is woken and a claim of many queues finds it
    assert raw.llen(k.q_bell("real")) == 1
    assert raw.zscore(k.ready_queues, "real") is not None
    for run_id in (ready, later):
        assert raw.hget(k.run(run_id), "queue") == b"real"
        assert raw.hget(k.run(run_id), "queueFallback") is None
    assert client.get_run(ready).queue == "real"  # type: ignore[union-attr]
    # the caller's own choice of default stays
    assert raw.zscore(k.q_ready("default"), chosen) is not None
    assert raw.hget(k.run(chosen), "queue") == b"default"
    assert not raw.exists(k.fallback_runs)
    assert client.scripts.adopt_runs(100) == (0, 0, 0)


def test_a_run_of_a_workflow_defined_on_default_is_not_listed(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow("on-default", registry=registry)
    def on_default(ctx: Context[Any]) -> None:
        return None

    run_id = on_default.run(None, client=client).id
    assert raw.hget(client.keys.run(run_id), "queueFallback") is None
    assert not raw.exists(client.keys.fallback_runs)


def test_runs_no_longer_on_default_leave_the_list_untouched(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    k = client.keys
    gone = bare.run_by_name("adoptee", None).id
    canceled = bare.run_by_name("adoptee", None).id
    raw.delete(k.run(gone))
    assert client.cancel_run(canceled)
    _register(client, "adoptee", "real")
    assert client.scripts.adopt_runs(100) == (0, 0, 2)
    assert not raw.exists(k.fallback_runs)
    assert not raw.exists(k.run(gone)), "a lost run is not written back"
    assert raw.hget(k.run(canceled), "queue") == b"default"


def test_a_workflow_registered_on_default_keeps_its_runs_there(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    k = client.keys
    run_id = bare.run_by_name("on-default-late", None).id
    score = raw.zscore(k.q_ready("default"), run_id)
    _register(client, "on-default-late", "default")
    assert client.scripts.adopt_runs(100) == (0, 0, 1)
    assert raw.zscore(k.q_ready("default"), run_id) == score
    assert raw.hget(k.run(run_id), "queueFallback") is None
    assert not raw.exists(k.fallback_runs)


def test_a_call_reads_one_page_and_pages_past_unregistered_runs(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    k = client.keys
    for _ in range(5):
        bare.run_by_name("ghost", None)
    mine = [bare.run_by_name("adoptee", i).id for i in range(4)]
    mine += [h.id for h in bare.run_many_by_name("adoptee", [None] * 3)]
    bare.run_many_by_name("ghost", [None] * 2)
    _register(client, "adoptee", "real")
    assert raw.zcard(k.fallback_runs) == 14
    moved, kept, reads = _adopt_all(client, batch=4)  # pages of 4
    assert (moved, kept) == (7, 7)
    assert max(reads) <= 4, reads
    assert set(raw.zrange(k.q_ready("real"), 0, -1)) == {m.encode() for m in mine}
    assert raw.zcard(k.fallback_runs) == 7, "the unregistered workflow's runs wait"


def test_run_many_by_name_marks_its_runs_and_a_defined_batch_does_not(
    bare: Client, client: Client, registry: Registry, raw: redis.Redis
) -> None:
    k = client.keys
    fallen = [h.id for h in bare.run_many_by_name("adoptee", [1, 2], idempotency_keys=["a", None])]
    chosen = bare.run_many_by_name("adoptee", [3], queue_override="default")[0].id
    for run_id in fallen:
        assert raw.hget(k.run(run_id), "queueFallback") == b"1"
    assert raw.hget(k.run(chosen), "queueFallback") is None
    assert set(raw.zrange(k.fallback_runs, 0, -1)) == {f.encode() for f in fallen}
    again = bare.run_many_by_name("adoptee", [1], idempotency_keys=["a"])[0].id
    assert again == fallen[0], "found by its key: the same run"
    _register(client, "adoptee", "real")
    assert client.scripts.adopt_runs(100) == (2, 0, 2)
    assert raw.hget(k.run(fallen[0]), "queue") == b"real"
    assert raw.hget(k.run(chosen), "queue") == b"default"


def test_an_adopted_run_gets_its_workflows_retries(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    """Enqueued by name with no metadata, a run got 1 attempt; adopted, it kept it,
    so a transient error failed it for good where a run enqueued a second later
    (with the metadata) was retried as its workflow says."""
    k = client.keys
    run_id = bare.run_by_name("retried", None).id
    assert raw.hget(k.run(run_id), "maxAttempts") == b"1"
    reg = Registry()

    @define_workflow("retried", queue="real", retries=Retries(max_attempts=4), registry=reg)
    def handler(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(reg, app="adopt-test")
    with_meta = bare.run_by_name("retried", None).id
    assert raw.hget(k.run(with_meta), "maxAttempts") == b"4"
    assert client.scripts.adopt_runs(100) == (1, 0, 1)
    assert raw.hget(k.run(run_id), "queue") == b"real"
    assert raw.hget(k.run(run_id), "maxAttempts") == b"4"


def test_a_fallback_run_claimed_meanwhile_stays_listed(
    bare: Client, client: Client, raw: redis.Redis
) -> None:
    """A worker of another app serving ``default`` claims the run to put it back
    (foreign.held_after_loss): a page read meanwhile keeps its entry, and once the
    run is back the next page moves it. (Dropped, it stayed on ``default``.)"""
    k = client.keys
    run = bare.run_by_name("held", None).id
    _register(client, "held", "elsewhere")
    raw.hset(k.run(run), "status", "running")  # as claimed
    assert _adopt_all(client) == (0, 1, [1])
    assert raw.zscore(k.fallback_runs, run) is not None
    raw.hset(k.run(run), "status", "queued")  # put back
    assert _adopt_all(client)[0] == 1
    assert raw.hget(k.run(run), "queue") == b"elsewhere"
    assert raw.zscore(k.fallback_runs, run) is None
