"""relist_runs.lua: runs put back into the index keys a lost key took them out of."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from redflow_mp.lostkeys import Relisted, relist_runs

pytestmark = pytest.mark.timeout(30)


def _pass(client: Client, page: int = 500) -> list[tuple[str, str]]:
    """One whole pass of the sweep; the runs it put back, where."""
    put: list[tuple[str, str]] = []
    for _ in range(1000):
        got = relist_runs(client, page)
        put.extend(got.put)
        if got.done:
            return put
    raise AssertionError("no pass ended in 1,000 calls")


def test_queued_runs_lost_with_their_ready_set_go_back_in_priority_order(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [enq(max_concurrency=10) for _ in range(3)]
    raw.hset(k.run(ids[2]), "priority", 5)  # as an enqueue with priority 5 writes it
    before = [raw.zscore(k.q_ready("q"), i) for i in ids[:2]]
    raw.delete(k.q_ready("q"), k.ready_queues, k.q_bell("q"), k.queues)
    assert _pass(client) == [(i, k.q_ready("q")) for i in ids]
    assert raw.smembers(k.queues) == {b"q"}
    # the priority-5 run first, the others in their order at their own scores
    assert raw.zrange(k.q_ready("q"), 0, -1) == [i.encode() for i in (ids[2], ids[0], ids[1])]
    assert [raw.zscore(k.q_ready("q"), i) for i in ids[:2]] == before
    assert raw.zscore(k.ready_queues, "q") is not None and raw.llen(k.q_bell("q")) >= 1
    assert _pass(client) == []  # idempotent: a second pass finds nothing
    assert client.scripts.claim(("q",), 5_000, new_token()) is not None


def test_finished_canceled_running_and_claimed_runs_are_never_placed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    canceled, done, running, held, left = (enq(max_concurrency=10) for _ in range(5))
    assert client.scripts.cancel(canceled, "no") == "canceled"
    for rid in (done, running, held):  # claimed in order: the oldest first
        tok = new_token()
        _, got = client.scripts.claim(("q",), 60_000, tok)
        assert got is not None and got.id == rid
        if rid == done:
            assert client.scripts.finalize(done, tok, "succeeded", b'"ok"') == "succeeded"
    # A claimed run whose record says queued (a claim is one script: only a hand
    # writes this) holds a lease entry: never placed beside its holder.
    raw.hset(k.run(held), "status", "queued")
    raw.delete(k.q_ready("q"))
    put = _pass(client)
    assert (left, k.q_ready("q")) in put
    assert raw.zrange(k.q_ready("q"), 0, -1) == [left.encode()]
    for rid in (done, canceled, running, held):
        assert (rid, k.q_ready("q")) not in put
    assert raw.hget(k.run(done), "status") == b"succeeded"
    assert raw.hget(k.run(canceled), "status") == b"canceled"
    assert raw.hget(k.run(running), "status") == b"running"
    assert _pass(client) == []
    # claims take the run put back once, and nothing else
    _, got = client.scripts.claim(("q",), 60_000, new_token())
    assert got is not None and got.id == left
    assert client.scripts.claim(("q",), 60_000, new_token())[1] is None


def test_scheduled_runs_lost_with_their_scheduled_set_and_due_queues_go_back(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    due = client.server_time_ms() + 60_000
    a, b = enq(run_at_ms=due), enq(run_at_ms=due + 5_000)
    raw.delete(k.q_scheduled("q"), k.due_queues)
    put = _pass(client)
    assert sorted(put) == sorted(
        [(a, k.q_scheduled("q")), (b, k.q_scheduled("q")), (a, k.due_queues)]
    )
    assert raw.zrange(k.q_scheduled("q"), 0, -1, withscores=True) == [
        (a.encode(), float(due)),
        (b.encode(), float(due + 5_000)),
    ]
    assert raw.zscore(k.due_queues, "q") == float(due)
    # due-queues later than a run's due time (never late) is moved earlier
    raw.zadd(k.due_queues, {"q": due + 99_000})
    assert _pass(client) == [(a, k.due_queues)]
    assert raw.zscore(k.due_queues, "q") == float(due)
    assert _pass(client) == []


def test_parked_runs_keep_the_parking_rule(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    holder = enq()  # max_concurrency 1 (the default)
    client.scripts.claim(("q",), 60_000, new_token())
    first, second = enq(), enq()
    assert client.scripts.claim(("q",), 60_000, new_token())[1] is None  # parks both
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [first.encode(), second.encode()]
    # `second` as if it had been in its (lost) ready set while its workflow is at
    # its limit with a run parked: it is parked behind that one, as its enqueue
    # would have been; `parked` lost too.
    raw.zrem(k.wf_waiting("wf"), second)
    raw.delete(k.parked)
    put = _pass(client)
    assert sorted(put) == sorted([(first, k.parked), (second, k.wf_waiting("wf"))])
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [first.encode(), second.encode()]
    assert raw.smembers(k.parked) == {b"wf"}
    # The waiting set lost: back to the ready set (claims park them again).
    raw.delete(k.wf_waiting("wf"))
    assert _pass(client) == [(first, k.q_ready("q")), (second, k.q_ready("q"))]
    assert raw.smembers(k.wf_running("wf")) == {holder.encode()}


def test_status_indexes_created_and_workflow_runs_and_slots_go_back(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    done, running, queued = (
        enq(max_concurrency=10),
        enq(max_concurrency=10),
        enq(max_concurrency=10),
    )
    tok = new_token()
    client.scripts.claim(("q",), 60_000, tok)
    assert client.scripts.finalize(done, tok, "succeeded", b'"ok"') == "succeeded"
    client.scripts.claim(("q",), 60_000, new_token())
    finished_at = float(raw.hget(k.run(done), "finishedAt") or 0)
    created = {r: raw.zscore(k.runs_created, r) for r in (done, running, queued)}
    raw.delete(
        k.runs_status("succeeded"),
        k.runs_status("running"),
        k.runs_status("queued"),
        k.workflow_runs("wf"),
        k.wf_running("wf"),
    )
    put = _pass(client)
    assert sorted(put) == sorted(
        [
            (done, k.runs_status("succeeded")),
            (running, k.runs_status("running")),
            (queued, k.runs_status("queued")),
            (done, k.workflow_runs("wf")),
            (running, k.workflow_runs("wf")),
            (queued, k.workflow_runs("wf")),
            (running, k.wf_running("wf")),
        ]
    )
    assert raw.zscore(k.runs_status("succeeded"), done) == finished_at
    assert raw.smembers(k.wf_running("wf")) == {running.encode()}
    # runs:created lost: the unfinished runs come back from their status indexes
    # (a finished run's entry does not: documented in operations.md)
    raw.delete(k.runs_created)
    assert sorted(_pass(client)) == sorted([(running, k.runs_created), (queued, k.runs_created)])
    assert raw.zscore(k.runs_created, queued) == created[queued]
    assert _pass(client) == []


def test_pages_cover_every_run_once_a_pass_whatever_leaves_meanwhile(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [enq(max_concurrency=100) for _ in range(25)]
    raw.delete(k.q_ready("q"))
    first = relist_runs(client, 10)
    assert first == Relisted(False, 10, [(i, k.q_ready("q")) for i in ids[:10]])
    # The cursor's run leaves runs:created (retention, say): the next page goes
    # on at its score.
    raw.zrem(k.runs_created, ids[9])
    put = list(first.put)
    for _ in range(10):
        got = relist_runs(client, 10)
        put.extend(got.put)
        if got.done:
            break
    assert sorted(put) == sorted(
        [(i, k.q_ready("q")) for i in ids] + [(ids[9], k.runs_created)]
    )  # ids[9] is back in runs:created too: its status index named it
    assert raw.zcard(k.q_ready("q")) == 25
    assert not raw.exists(k.relist)  # a finished pass leaves no cursor


def test_a_cursor_of_another_type_is_left_alone_and_a_pass_still_reads_its_first_page(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq(max_concurrency=10)
    raw.delete(k.q_ready("q"))
    raw.set(k.relist, "a neighbour's value")
    got = relist_runs(client)
    assert (rid, k.q_ready("q")) in got.put
    assert raw.get(k.relist) == b"a neighbour's value"  # not ours to delete


def test_a_cursor_whose_run_moved_to_a_later_score_skips_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # A run whose score in the index read moved on (re-entering a status index
    # later): paging on after its new rank skipped every run in between. Finished
    # runs: runs:created is the only source that reads them.
    k = client.keys
    ids = [enq(max_concurrency=100) for _ in range(25)]
    for rid in ids:
        assert client.scripts.cancel(rid, "test") == "canceled"
    raw.delete(k.runs_status("canceled"))
    first = relist_runs(client, 10)
    assert [i for i, _ in first.put] == ids[:10]
    raw.zadd(k.runs_created, {ids[9]: 9e12})  # the cursor's run, now last
    put = list(first.put)
    for _ in range(10):
        got = relist_runs(client, 10)
        put.extend(got.put)
        if got.done:
            break
    assert sorted(i for i, key in put if key == k.runs_status("canceled")) == sorted(ids)


def test_a_suspended_slot_holder_missing_from_wf_suspended_is_counted_again(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The deadlock rule past 256 slots counts wf-suspended:<wf>: a run suspended
    before that set existed (an upgrade), or one the set lost (evicted, deleted),
    stayed uncounted until it suspended again. A pass counts it, silently (after
    an upgrade every suspended run would warn), and never counts a running one."""
    k = client.keys
    held, running = enq(max_concurrency=10), enq(max_concurrency=10)
    for rid in (held, running):
        _, got = client.scripts.claim(("q",), 60_000, new_token())
        assert got is not None and got.id == rid
    # `held` suspended as a run suspended before the set existed: its slot, no lease
    raw.hset(k.run(held), "status", "suspended")
    raw.zrem(k.runs_status("running"), held)
    raw.zadd(k.runs_status("suspended"), {held: 1})
    raw.zrem(k.leases, held)
    assert raw.smembers(k.wf_running("wf")) == {held.encode(), running.encode()}
    assert not raw.exists(k.wf_suspended("wf"))
    assert _pass(client) == []
    assert raw.smembers(k.wf_suspended("wf")) == {held.encode()}
    assert _pass(client) == []
