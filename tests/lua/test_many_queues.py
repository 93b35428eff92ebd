"""Claims of a worker that serves many queues: ``ready-queues`` (the queues whose
ready set may hold runs) and the registered queue list (``qset:<digest>``, see
queueset.py). A claim costs in the queues holding runs, not in the queues
served; every path that fills a ready set lists its queue; a damaged index or
list strands no run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import text
from redflow_mp.ids import new_token
from redflow_mp.queueset import digest
from tests.helpers import command_counts

pytestmark = pytest.mark.timeout(60)

QUEUES = tuple(f"q{i}" for i in range(2000))


def _claim(client: Client, queues: tuple[str, ...] = QUEUES, **kw: object) -> object:
    return client.scripts.claim(queues, 5_000, new_token(), **kw)[1]  # type: ignore[arg-type]


def _id(claimed: object) -> str | None:
    return getattr(claimed, "id", None)


def _listed(raw: redis.Redis, client: Client) -> set[str]:
    return {text(m) for m in raw.smembers(client.keys.ready_queues)}


def _holding(raw: redis.Redis, client: Client) -> set[str]:
    """The queues whose ready set holds a run (every ready key of the prefix)."""
    tag = client.keys.tag
    out = set()
    for key in raw.scan_iter(match=tag.replace("{", "[{]").replace("}", "[}]") + ":q:*:ready"):
        out.add(key.decode()[len(tag) + 3 : -len(":ready")])
    return out


def _index_true(raw: redis.Redis, client: Client) -> None:
    holding = _holding(raw, client)
    assert holding <= _listed(raw, client), (holding, _listed(raw, client))


def test_a_claim_over_2000_queues_reads_only_the_queues_holding_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A claim read every queue served: one EXISTS per 32 queues and the heads of
    the blocks holding runs, also when nothing was ready (2,000 queues: 63
    EXISTS per claim; 5,000 queues: ~1.5-2 ms of Redis per claim). Now the
    registered list is intersected with ready-queues: a few commands, whatever
    the number of queues served; the order over all the queues is unchanged."""
    _claim(client)  # the first claim of a list registers it
    old, new = enq("wa", queue="q5"), enq("wb", queue="q1999")
    high = enq("wc", queue="q1000")
    raw.zadd(client.keys.q_ready("q5"), {old: 10})
    raw.zadd(client.keys.q_ready("q1999"), {new: 20})
    raw.zadd(client.keys.q_ready("q1000"), {high: 30 - 2**44})  # priority 1 beats older runs
    got: list[object] = []
    counts = command_counts(raw, lambda: got.append(_claim(client)))
    assert counts.get("exists", 0) <= 1 and counts.get("zrange", 0) <= 4, counts
    assert sum(counts.values()) <= 40, counts
    got += [_claim(client), _claim(client)]
    assert [_id(g) for g in got] == [high, old, new]
    idle = command_counts(raw, lambda: got.append(_claim(client)))
    assert got[-1] is None
    assert sum(idle.values()) <= 6 and idle.get("exists", 0) <= 1, idle


def test_ties_go_to_the_queue_at_the_turn(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    a, b = enq("wd", queue="q40"), enq("we", queue="q700")
    raw.zadd(client.keys.q_ready("q40"), {a: 5})
    raw.zadd(client.keys.q_ready("q700"), {b: 5})
    assert _id(_claim(client, turn=700)) == b  # q700, q701, ..., q1999, q0, ..., q40
    raw.zadd(client.keys.q_ready("q700"), {b: 5})
    raw.hset(client.keys.run(b), "status", "queued")
    raw.srem(client.keys.wf_running("we"), b)
    assert _id(_claim(client, turn=41)) == b  # q40 comes last
    assert _id(_claim(client)) == a


def test_every_path_that_fills_a_ready_set_lists_its_queue(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Each path below moves a run into an empty ready set whose queue is not
    listed (as after a claim of one queue emptied it and a claim of many removed
    it): the queue is listed once the script returns."""
    k, s = client.keys, client.scripts

    def unlist(q: str) -> None:
        assert raw.zcard(k.q_ready(q)) == 0
        raw.srem(k.ready_queues, q)

    enq("w1", queue="a")  # enqueue into an empty ready set
    assert "a" in _listed(raw, client)
    # retry (no delay) and requeue of a claimed run
    for mode, q in (("retry", "b"), ("requeue", "c")):
        enq("w-" + q, queue=q)
        token = new_token()
        claimed = s.claim((q,), 5_000, token)[1]
        assert claimed is not None
        unlist(q)
        status, _ = s.claim((q,), 5_000, "", (mode, claimed.id, token, "{}", 0))
        assert status == "queued"
        assert q in _listed(raw, client)
    # promote: a scheduled run comes due
    enq("w-d", queue="d", run_at_ms=client.server_time_ms() + 20)
    unlist("d")
    while s.promote(100)[0] == 0:
        pass
    assert "d" in _listed(raw, client)
    # release of a parked run by the finish that frees its slot, in the same call
    # as a claim from many queues: that claim takes the released run
    first, second = enq("w-e", queue="e"), enq("w-e", queue="e")
    token = new_token()
    assert _id(s.claim(("e",), 5_000, token)[1]) == first
    assert s.claim(("e",), 5_000, new_token())[1] is None  # second parked: w-e at its limit
    unlist("e")
    many = (*QUEUES[:40], "e")
    _claim(client, many)  # registers the list
    status, claimed = s.claim(many, 5_000, new_token(), ("succeeded", first, token, "null", 0))
    assert status == "succeeded" and _id(claimed) == second
    # resume of a failed run
    rid = enq("w-f", queue="f")
    token = new_token()
    assert _id(s.claim(("f",), 5_000, token)[1]) == rid
    assert s.claim(("f",), 5_000, "", ("failed", rid, token, "{}", 0))[0] == "failed"
    unlist("f")
    client.resume_run(rid)
    assert "f" in _listed(raw, client)
    _index_true(raw, client)


def test_a_claim_removes_the_queues_it_finds_empty(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    _claim(client)
    ids = [enq("wg", queue=f"q{i}") for i in (3, 4, 5)]
    raw.hset(client.keys.workflow("wg"), "maxConcurrency", "10")
    s = client.scripts
    assert _id(s.claim(("q3",), 5_000, new_token())[1]) == ids[0]  # one queue: stays listed
    assert {"q3", "q4", "q5"} <= _listed(raw, client)
    assert [_id(_claim(client)) for _ in range(3)] == [ids[1], ids[2], None]
    assert not {"q3", "q4", "q5"} & _listed(raw, client)


def test_a_deleted_index_strands_no_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """ready-queues deleted by hand: a claim of the registered list finds nothing,
    the scan (the safety net of an idle worker, and every SCAN_EVERY s) claims
    the run and lists its queue again."""
    _claim(client)
    a = enq("wh", queue="q77")
    b = enq("wi", queue="q77")
    raw.delete(client.keys.ready_queues)
    assert _claim(client) is None
    assert _id(_claim(client, scan=True)) == a
    assert "q77" in _listed(raw, client)
    assert _id(_claim(client)) == b


def test_an_index_of_another_type_reads_every_queue(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    _claim(client)
    raw.delete(client.keys.ready_queues)
    raw.set(client.keys.ready_queues, "not a set")
    a = enq("wj", queue="q9")
    b = enq("wk", queue="q1500")
    assert [_id(_claim(client)) for _ in range(3)] == [a, b, None]
    assert raw.get(client.keys.ready_queues) == b"not a set"  # left alone


@pytest.mark.parametrize("damage", ["delete", "wrong type"])
def test_a_lost_queue_list_is_registered_again(
    raw: redis.Redis, client: Client, enq: Callable[..., str], damage: str
) -> None:
    """The registered list expired, deleted or of another type: the claim that
    finds out replies 'register' (the finish it carried applied once) and the
    client sends it again with the names."""
    a, b = enq("wl", queue="q10"), enq("wm", queue="q11")
    token = new_token()
    claimed = client.scripts.claim(QUEUES, 5_000, token)[1]
    assert _id(claimed) == a
    qset = client.keys.qset(digest(QUEUES))
    assert raw.zcard(qset) == 2000 and 0 < raw.pttl(qset) <= 86_400_000
    raw.delete(qset)
    if damage == "wrong type":
        raw.set(qset, "x")
    status, got = client.scripts.claim(QUEUES, 5_000, new_token(), ("succeeded", a, token, "1", 0))
    assert status == "succeeded" and _id(got) == b
    assert raw.zrange(qset, 0, 2, withscores=True) == [(b"q0", 0), (b"q1", 1), (b"q2", 2)]
    assert raw.hget(client.keys.run(a), "status") == b"succeeded"


def test_enqueue_runs_lists_its_queue(raw: redis.Redis, client: Client) -> None:
    client.run_many_by_name("wn", [{}, {}], queue_override="bulk")
    assert "bulk" in _listed(raw, client)
    _index_true(raw, client)
