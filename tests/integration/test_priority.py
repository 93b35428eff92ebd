"""Priorities: ``priority`` (0..9, higher claimed first) on ``define_workflow`` and
per run, stored on the run, synced in the metadata (used by ``run_by_name``), on
child runs, cron runs and retried runs; bad values refused before anything is
written. (Claim order itself: ``tests/lua/test_claim.py``; one busy supervisor
process: ``tests/process/test_priority.py``.)"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.admin import retry_run
from redflow_mp.cron import cron_id_for
from redflow_mp.maintenance import LeaderLock, cron_tick
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def _score(raw: redis.Redis, client: Client, queue: str, run_id: str) -> int:
    score = raw.zscore(client.keys.q_ready(queue), run_id)
    assert score is not None
    return int(score)


def test_priority_from_the_definition_and_per_run(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    @define_workflow("urgent", queue="pq", priority=7, registry=registry)
    def urgent(ctx: Context[Any]) -> None:
        return None

    @define_workflow("plain", queue="pq", registry=registry)
    def plain(ctx: Context[Any]) -> None:
        return None

    assert urgent.priority == 7 and plain.priority == 0
    a = urgent.run({})
    b = urgent.run({}, priority=2)  # the run's own wins
    c = plain.run({})
    d = plain.run({}, priority=9)
    e = client.run_by_name("urgent", {})  # the client's registry has it
    assert [h.state().priority for h in (a, b, c, d, e)] == [7, 2, 0, 9, 7]  # type: ignore[union-attr]
    assert raw.hget(client.keys.run(c.id), "priority") is None  # 0 is not written
    # claimed first: the lowest score, (9 - priority) * 2**44 + the ready time
    band = 2**44
    assert _score(raw, client, "pq", d.id) // band == 0
    assert _score(raw, client, "pq", a.id) // band == 2
    assert _score(raw, client, "pq", c.id) // band == 9


@pytest.mark.parametrize(
    ("bad", "exc", "shown"),
    [
        (True, TypeError, "True"),
        (10, ValueError, "10"),
        (-1, ValueError, "-1"),
        ("5", TypeError, "'5'"),
        (1.0, TypeError, "1.0"),
    ],
)
def test_bad_priorities_are_refused_before_anything_is_written(
    raw: redis.Redis, client: Client, registry: Registry, bad: Any, exc: type[Exception], shown: str
) -> None:
    match = rf"priority must be .*0.* 9.*{shown}"
    with pytest.raises(exc, match=match):
        define_workflow("bad", priority=bad, registry=registry)
    assert "bad" not in registry

    @define_workflow("ok", registry=registry)
    def ok(ctx: Context[Any]) -> None:
        return None

    with pytest.raises(exc, match=match):
        ok.run({}, priority=bad)
    with pytest.raises(exc, match=match):
        client.run_by_name("ok", {}, priority=bad)
    assert raw.zcard(client.keys.runs_created) == 0


def test_priority_is_synced_and_used_by_run_by_name_from_metadata(
    client: Client, registry: Registry, make_client: Any
) -> None:
    @define_workflow("meta-prio", queue="mq", priority=6, registry=registry)
    def meta_prio(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(registry, app="prio-test")
    meta = client.get_workflow_meta("meta-prio")
    assert meta is not None and meta.priority == 6
    assert [m.priority for m in client.list_workflows()] == [6]
    # A client without the definition takes queue and priority from the metadata.
    other = make_client(registry=Registry())
    h = other.run_by_name("meta-prio", {})
    state = other.get_run(h.id)
    assert state is not None and (state.queue, state.priority) == ("mq", 6)
    state = other.get_run(other.run_by_name("meta-prio", {}, priority=1).id)
    assert state is not None and state.priority == 1


def test_child_runs_cron_runs_and_retried_runs_carry_their_priority(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("kid", queue="kids", priority=3, registry=registry)
    def kid(ctx: Context[Any]) -> None:
        return None

    @define_workflow("parent", queue="parents", registry=registry)
    def parent(ctx: Context[Any]) -> list[str]:
        return [
            ctx.step.emit_workflow("plain", kid, {}),
            ctx.step.emit_workflow("urgent", "kid", {}, priority=8),
        ]

    @define_workflow(
        "ticker", queue="kids", priority=5, cron=[Cron("0 0 1 1 *")], registry=registry
    )
    def ticker(ctx: Context[Any]) -> None:
        return None

    workers.start(queues=["parents"])
    plain_id, urgent_id = parent.run({}).result(timeout=20)
    kids = [client.get_run(plain_id), client.get_run(urgent_id)]
    assert [k.priority for k in kids if k is not None] == [3, 8]

    client.sync_registry(registry, app="prio-test")
    cid = cron_id_for("ticker", Cron("0 0 1 1 *"))
    raw.zadd(client.keys.cron_next, {cid: client.server_time_ms() - 1000})
    lock = LeaderLock(client, 10_000)
    assert lock.tick()
    (fired,) = cron_tick(client, lock.token).fired
    cron_run = client.get_run(fired)
    assert cron_run is not None and cron_run.priority == 5

    assert client.cancel_run(urgent_id)
    again = retry_run(client, urgent_id)
    state = again.state()
    assert state is not None and state.priority == 8 and state.retry_of == urgent_id
