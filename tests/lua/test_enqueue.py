"""enqueue_run.lua: run hash, indexes, ready or scheduled, idempotency mapping;
an existing run is never overwritten."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_run_id, new_token
from tests.helpers import status_of, text

pytestmark = pytest.mark.timeout(30)


def test_enqueue_creates_hash_indexes_and_ready_entry(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    run_id = enq(
        "wf",
        "q",
        b'{"a":1}',
        max_attempts=3,
        parent="P1",
        cron_id="wf:c",
        max_concurrency=2,
        timeout_ms=1500,
        key="k1",
    )
    h = {text(a): text(b) for a, b in raw.hgetall(k.run(run_id)).items()}
    now = client.server_time_ms()
    assert h["id"] == run_id
    assert (h["workflow"], h["queue"], h["status"]) == ("wf", "q", "queued")
    assert h["inputJson"] == '{"a":1}'
    assert (h["attempt"], h["maxAttempts"]) == ("1", "3")
    assert (h["parentRunId"], h["cronId"], h["idempotencyKey"]) == ("P1", "wf:c", "k1")
    assert (h["maxConcurrency"], h["timeoutMs"]) == ("2", "1500")
    created = int(h["createdAt"])
    assert now - 5_000 < created <= now
    assert int(h["availableAt"]) == created == int(h["updatedAt"])
    assert raw.zscore(k.runs_created, run_id) == created
    assert raw.zscore(k.workflow_runs("wf"), run_id) == created
    assert raw.zscore(k.runs_status("queued"), run_id) == created
    assert raw.zrange(k.q_ready("q"), 0, -1, withscores=True) == [
        (run_id.encode(), 9 * 2**44 + created)
    ]
    assert raw.llen(k.q_bell("q")) == 1
    assert raw.smembers(k.queues) == {b"q"}
    assert raw.get(k.idempotency("wf", "k1")) == run_id.encode()
    assert raw.pttl(k.idempotency("wf", "k1")) == -1  # until the run finishes
    assert h["idempotencyTtlMs"] == "60000"
    assert "priority" not in h and "lease" not in h


def test_future_run_at_schedules_instead_of_ready(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    due = client.server_time_ms() + 60_000
    run_id = enq(run_at_ms=due)
    assert status_of(raw, client, run_id) == "scheduled"
    assert raw.zscore(k.q_scheduled("q"), run_id) == due
    assert raw.hget(k.run(run_id), "availableAt") == str(due).encode()
    assert raw.zscore(k.runs_status("scheduled"), run_id) is not None
    assert not raw.exists(k.q_ready("q"))
    assert raw.zscore(k.due_queues, "q") == due


def test_past_run_at_is_queued_now(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(run_at_ms=client.server_time_ms() - 60_000)
    assert status_of(raw, client, run_id) == "queued"
    assert raw.zrange(client.keys.q_ready("q"), 0, -1) == [run_id.encode()]


def test_same_idempotency_key_returns_the_same_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    first = enq(key="same")
    second = enq(key="same", input_json=b'{"other":true}')
    assert first == second
    assert raw.zcard(client.keys.runs_created) == 1
    assert raw.zcard(client.keys.q_ready("q")) == 1
    # the key is per workflow
    assert enq("other-wf", key="same") != first


def test_same_run_id_twice_is_a_no_op(raw: redis.Redis, client: Client) -> None:
    rid = new_run_id()
    args = (rid, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None)
    assert client.scripts.enqueue(*args) == (rid, True)
    # A resend (what the client does after a lost reply) finds the run.
    assert client.scripts.enqueue(*args) == (rid, False)
    assert raw.zcard(client.keys.q_ready("q")) == 1


def test_a_resend_and_a_new_run_while_the_workflow_has_parked_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """enqueue_run asks EXISTS of the run and of the workflow's waiting set in one
    command: with parked runs, a resend of an existing id still writes nothing and
    a new run is parked at once behind them (a workflow at its limit)."""
    k = client.keys
    first = enq(max_concurrency=1)
    parked = enq(max_concurrency=1)
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is not None
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is None  # parks `parked`
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    before = raw.hgetall(k.run(parked))
    args = (parked, "wf", "q", b'{"x":1}', 1, 0, "", 1000, "", "", 1, None)
    assert client.scripts.enqueue(*args) == (parked, False)
    assert raw.hgetall(k.run(parked)) == before
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    assert not raw.exists(k.q_ready("q"))
    third = enq(max_concurrency=1)
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode(), third.encode()]
    assert not raw.exists(k.q_ready("q"))
    assert status_of(raw, client, third) == "queued"
    assert raw.hget(k.run(first), "status") == b"running"


def test_idempotency_key_of_a_removed_run_no_longer_dedupes(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    first = enq(key="gone")
    raw.delete(client.keys.run(first))  # as retention would
    second = enq(key="gone")
    assert second != first
    assert raw.get(client.keys.idempotency("wf", "gone")) == second.encode()


def test_concurrent_enqueues_with_one_key_create_one_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    barrier = threading.Barrier(8)
    ids: list[str] = []
    lock = threading.Lock()

    def go() -> None:
        barrier.wait()
        for _ in range(20):
            rid = enq(key="race")
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert raw.zcard(client.keys.runs_created) == 1


def _late(client: Client, rid: str) -> tuple[str, bool]:
    return client.scripts.enqueue(rid, "wf", "q", b'{"late":true}', 1, 0, "", 1000, "", "", 1, None)


def test_late_original_enqueue_never_overwrites_a_running_run(
    raw: redis.Redis, client: Client
) -> None:
    """Issue 10 #2: the original call of a resent enqueue reaches Redis last (a
    socket timeout, then the kernel's retransmission after a healed blackhole)."""
    k = client.keys
    rid = new_run_id()
    assert _late(client, rid) == (rid, True)  # the resend, applied first
    token = new_token()
    _, claimed = client.scripts.claim(("q",), 30_000, token)
    assert claimed is not None and claimed.id == rid
    before = raw.hgetall(k.run(rid))
    assert _late(client, rid) == (rid, False)  # the original, late
    assert raw.hgetall(k.run(rid)) == before
    assert status_of(raw, client, rid) == "running"
    assert not raw.exists(k.q_ready("q"))
    assert raw.zscore(k.runs_status("queued"), rid) is None
    assert client.scripts.finalize(rid, token, "succeeded", b"1") == "succeeded"
    assert not raw.exists(k.wf_running("wf"))


def test_late_original_enqueue_never_overwrites_a_finished_run(
    raw: redis.Redis, client: Client
) -> None:
    k = client.keys
    rid = new_run_id()
    _late(client, rid)
    token = new_token()
    client.scripts.claim(("q",), 30_000, token)
    assert client.scripts.finalize(rid, token, "succeeded", b'"done"') == "succeeded"
    before = raw.hgetall(k.run(rid))
    assert _late(client, rid) == (rid, False)
    assert raw.hgetall(k.run(rid)) == before
    assert not raw.exists(k.q_ready("q"))
    assert [text(s) for s in raw.zrange(k.runs_status("succeeded"), 0, -1)] == [rid]
    assert raw.zscore(k.runs_status("queued"), rid) is None
    # nothing left in the workflow's running set: the next run is not parked
    assert not raw.exists(k.wf_running("wf"))
    nxt = _late(client, new_run_id())[0]
    _, got = client.scripts.claim(("q",), 30_000, new_token())
    assert got is not None and got.id == nxt


def test_an_enqueue_refused_by_a_queue_key_of_the_wrong_type_leaves_no_run(
    raw: redis.Redis, client: Client
) -> None:
    """The queue's ready set overwritten with a string (by hand, by another program):
    the enqueue used to write the run's hash, its idempotency key and its indexes
    before it failed on the ready set, leaving a run queued in no ready set. A
    retry with the same idempotency key then returned that run as enqueued: it
    never ran, even once the key was repaired. Now nothing is left behind."""
    from redflow_mp.errors import WrongTypeError

    ready = client.keys.q_ready("q")
    raw.set(ready, "not a redflow key")
    rid = new_run_id()
    args = ("wf", "q", b"{}", 1, 0, "key-1", 60_000, "", "", None, None)
    with pytest.raises(WrongTypeError):
        client.scripts.enqueue(rid, *args)
    assert not raw.exists(client.keys.run(rid))
    assert raw.zscore(client.keys.runs_created, rid) is None
    assert raw.zscore(client.keys.runs_status("queued"), rid) is None
    assert not raw.exists(client.keys.idempotency("wf", "key-1"))
    raw.delete(ready)
    again, created = client.scripts.enqueue(new_run_id(), *args)
    assert created and raw.zscore(ready, again) is not None


_TIMES = ("createdAt", "availableAt", "updatedAt")


def _written(raw: redis.Redis, client: Client, run_id: str, queue: str) -> dict[str, object]:
    """What an enqueue wrote for ``run_id``: its hash (times relative to createdAt)
    and the index entries naming it (scores relative to createdAt)."""
    k = client.keys
    h = {text(a): text(b) for a, b in raw.hgetall(k.run(run_id)).items()}
    created = int(h["createdAt"])
    fields: dict[str, object] = {f: v for f, v in h.items() if f not in (*_TIMES, "id")}
    fields.update({f: int(h[f]) - created for f in _TIMES})
    fields["id"] = h["id"] == run_id
    if h["status"] == "scheduled":  # due at the run_at given: absolute
        fields["availableAt"] = int(h["availableAt"])

    def rel(key: str, absolute: bool = False) -> float | None:
        score = raw.zscore(key, run_id)
        return None if score is None else score - (0 if absolute else created)

    wf = h["workflow"]
    return {
        "hash": fields,
        "created": rel(k.runs_created),
        "workflow-runs": rel(k.workflow_runs(wf)),
        "status": {s: rel(k.runs_status(s)) for s in ("queued", "scheduled")},
        "ready": rel(k.q_ready(queue)),
        "scheduled": rel(k.q_scheduled(queue), absolute=True),
        "listed": raw.sismember(k.queues, queue),
        "due-queues": raw.zscore(k.due_queues, queue) is not None,
        "ready-queues": raw.zscore(k.ready_queues, queue) is not None,
        "bell": raw.llen(k.q_bell(queue)),
    }


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"priority": 7, "timeout": 2.5},
        {"run_at": 3_000_000_000.0},
        {"idempotency_key": "same-key", "idempotency_ttl": 90.0, "priority": 3},
    ],
    ids=["plain", "priority-timeout", "scheduled", "idempotency-key"],
)
def test_one_run_is_written_as_a_batch_of_one_writes_it(
    raw: redis.Redis, client: Client, options: dict[str, Any]
) -> None:
    """enqueue_run writes a run with its own code (the hot path of a one-by-one
    enqueue, written out in enqueue_run.lua), enqueue_runs with enqueue_plan/one/flush:
    the hash, the indexes, the queue's entries and the bell must be the same."""
    raw.hset(client.keys.workflow("wq"), "maxConcurrency", "5")
    opts = dict(options)
    key = opts.pop("idempotency_key", None)
    one = client.run_by_name("wq", {"a": 1}, queue_override="qa", idempotency_key=key, **opts).id
    many = client.run_many_by_name(
        "wq", [{"a": 1}], queue_override="qb", idempotency_keys=None if key is None else ["k2"],
        **opts,
    )[0].id  # fmt: skip
    a, b = _written(raw, client, one, "qa"), _written(raw, client, many, "qb")
    assert isinstance(a["hash"], dict) and isinstance(b["hash"], dict)
    assert a["hash"].pop("queue") == "qa" and b["hash"].pop("queue") == "qb"
    if key is not None:
        assert a["hash"].pop("idempotencyKey") == key and b["hash"].pop("idempotencyKey") == "k2"
    assert a == b


@pytest.mark.parametrize("limit", [None, 4])
def test_a_plain_run_hash_has_the_fields_of_every_run_in_order(
    raw: redis.Redis, client: Client, limit: int | None
) -> None:
    """A run with no option is written by enqueue's own HSET (no field table):
    the same fields in the same order as a run with options, maxConcurrency last
    and only when known."""
    rid = new_run_id()
    assert client.scripts.enqueue(rid, "wf", "q", b"{}", 2, 0, "", 0, "", "", limit, None) == (
        rid,
        True,
    )
    h = [(text(f), text(v)) for f, v in raw.hgetall(client.keys.run(rid)).items()]
    names = [f for f, _ in h]
    every = ["id", "workflow", "queue", "status", "inputJson", "attempt", "maxAttempts"]
    every += ["createdAt", "availableAt", "updatedAt"]
    assert names == every + ([] if limit is None else ["maxConcurrency"])
    d = dict(h)
    assert (d["id"], d["workflow"], d["queue"], d["status"]) == (rid, "wf", "q", "queued")
    assert (d["inputJson"], d["attempt"], d["maxAttempts"]) == ("{}", "1", "2")
    assert d["createdAt"] == d["availableAt"] == d["updatedAt"]
    assert d.get("maxConcurrency") == (None if limit is None else "4")
