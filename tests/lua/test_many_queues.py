"""Claims of a worker that serves many queues: ``ready-queues`` (the queues whose
ready set may hold runs) and the registered queue list (``qset:<digest>``, see
queueset.py). A claim costs in the queues holding runs, not in the queues
served; every path that fills a ready set lists its queue; a damaged index or
list strands no run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import text
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.queueset import SCAN_CHUNK, digest
from tests.helpers import command_counts, monitor
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A server for this module alone: ``_holding`` scans the keyspace, whose cost
    is every key on the server. On the xdist worker's shared server (a session's
    keys: ~300,000 by the time this module ran in CI) the 150 steps of
    ``test_claims_take_the_lowest_head_whatever_the_bounds`` took 35 s on a quiet
    machine, past the 60 s timeout under CI load: pytest-timeout's thread method
    then ends the worker with ``os._exit`` ("node down: Not properly terminated")."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


QUEUES = tuple(f"q{i}" for i in range(2000))


def _claim(client: Client, queues: tuple[str, ...] = QUEUES, **kw: object) -> object:
    return client.scripts.claim(queues, 5_000, new_token(), **kw)[1]  # type: ignore[arg-type]


def _id(claimed: object) -> str | None:
    return getattr(claimed, "id", None)


def _listed(raw: redis.Redis, client: Client) -> set[str]:
    return {text(m) for m in raw.zrange(client.keys.ready_queues, 0, -1)}


def _holding(raw: redis.Redis, client: Client) -> set[str]:
    """The queues whose ready set holds a run (every ready key of the prefix)."""
    tag = client.keys.tag
    out = set()
    pattern = tag.replace("{", "[{]").replace("}", "[}]") + ":q:*:ready"
    for key in raw.scan_iter(match=pattern, count=5000):  # a few pages, not hundreds
        out.add(key.decode()[len(tag) + 3 : -len(":ready")])
    return out


def _index_true(raw: redis.Redis, client: Client) -> None:
    """Every ready set holding a run is listed, at most at its head's score."""
    holding = sorted(_holding(raw, client))
    assert set(holding) <= _listed(raw, client), (holding, _listed(raw, client))
    with raw.pipeline(transaction=False) as pipe:  # one round trip, not two a queue
        for q in holding:
            pipe.zrange(client.keys.q_ready(q), 0, 0, withscores=True)
            pipe.zscore(client.keys.ready_queues, q)
        replies = pipe.execute()
    for i, q in enumerate(holding):
        head, bound = float(replies[2 * i][0][1]), replies[2 * i + 1]
        assert bound is not None and bound <= head, (q, bound, head)


def _heads(raw: redis.Redis, client: Client, queues: tuple[str, ...]) -> list[Any]:
    """Each queue's head (``[(member, score)]`` or ``[]``), in one round trip."""
    with raw.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zrange(client.keys.q_ready(q), 0, 0, withscores=True)
        return list(pipe.execute())


def _place(raw: redis.Redis, client: Client, q: str, run_id: str, score: int) -> None:
    """Put a run in a ready set at ``score`` by hand, as the scripts would (its
    bound in ready-queues lowered: see mark_ready)."""
    raw.zadd(client.keys.q_ready(q), {run_id: score})
    raw.zadd(client.keys.ready_queues, {q: score}, lt=True)


def _enqueue(client: Client, wf: str, q: str, priority: int = 0) -> str:
    rid, _ = client.scripts.enqueue(
        new_run_id(), wf, q, b"{}", 1, 0, "", 0, "", "", None, None, priority=priority
    )
    return rid


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
    high = _enqueue(client, "wc", "q1000", priority=1)  # beats older runs
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
    _place(raw, client, "q40", a, 5)
    _place(raw, client, "q700", b, 5)
    assert _id(_claim(client, turn=700)) == b  # q700, q701, ..., q1999, q0, ..., q40
    _place(raw, client, "q700", b, 5)
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
        raw.zrem(k.ready_queues, q)

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
    # (a minute ahead, made due by hand: a run_at 20 ms ahead could be past by the
    # time the enqueue ran under load, and the run went to the ready set at once)
    later = client.server_time_ms() + 60_000
    due = enq("w-d", queue="d", run_at_ms=later)
    unlist("d")
    raw.zadd(k.q_scheduled("d"), {due: later - 120_000})
    raw.zadd(k.due_queues, {"d": later - 120_000})
    assert s.promote(100)[0] == 1
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


def test_a_claim_over_2000_queues_all_holding_runs_reads_a_few(
    raw: redis.Redis, client: Client
) -> None:
    """Every one of 2,000 queues served holds a run: a claim read each one's head
    (2,000 ZRANGEs, ~3-6 ms of Redis per claim). Now it walks ready-queues from
    the lowest bound: one page and a head or two."""
    raw.hset(client.keys.workflow("wp"), "maxConcurrency", "100000")
    _claim(client)
    ids = [_enqueue(client, "wp", q) for q in QUEUES]
    with raw.pipeline(transaction=False) as pipe:  # distinct scores: no ties to compare
        for i, (q, rid) in enumerate(zip(QUEUES, ids, strict=True)):
            pipe.zadd(client.keys.q_ready(q), {rid: i + 1})
            pipe.zadd(client.keys.ready_queues, {q: i + 1}, lt=True)
        pipe.execute()
    got: list[object] = []
    counts = command_counts(raw, lambda: got.append(_claim(client)))
    assert counts.get("zrange", 0) <= 6 and sum(counts.values()) <= 40, counts
    assert _id(got[0]) == ids[0]
    for _ in range(5):
        got.append(_claim(client))
    assert [_id(g) for g in got] == ids[:6]
    _index_true(raw, client)


@pytest.mark.parametrize(("seed", "others"), [(7, 0), (11, 0), (13, 300)])
def test_claims_take_the_lowest_head_whatever_the_bounds(
    raw: redis.Redis, client: Client, seed: int, others: int
) -> None:
    """Runs of random priorities in random queues; claims of one queue (which leave
    their queue's bound low), cancels and enqueues in between: each claim of the
    list takes the lowest head of all (ties: the lowest position after the turn).
    With `others` queues not served listed ahead (older runs), every claim takes
    the intersection's way (its walk gives up after 8 pages)."""
    import random

    rnd = random.Random(seed)
    raw.hset(client.keys.workflow("wq"), "maxConcurrency", "100000")
    served = QUEUES[:300]
    _claim(client, served)
    with raw.pipeline(transaction=False) as pipe:
        for i in range(others):
            _place_in(pipe, client, f"other{seed}-{i}", new_run_id(), 1 + i)
        pipe.execute()
    for _ in range(400):
        _enqueue(client, "wq", rnd.choice(served[:60]), priority=rnd.choice((0, 0, 3, 9)))
    for step in range(150):
        turn = rnd.randrange(len(served))
        heads = []
        for i, top in enumerate(_heads(raw, client, served)):
            if top:
                heads.append((top[0][1], (i - turn) % len(served), text(top[0][0])))
        want = min(heads)[2] if heads else None
        assert _id(_claim(client, served, turn=turn)) == want, step
        r = rnd.random()
        if r < 0.2:  # a claim of one queue: its bound goes stale-low
            client.scripts.claim((rnd.choice(served[:60]),), 5_000, new_token())
        elif r < 0.3:
            _enqueue(client, "wq", rnd.choice(served), priority=rnd.choice((0, 5)))
        elif r < 0.35 and heads:
            client.cancel_run(rnd.choice(heads)[2])
        _index_true(raw, client)


def test_many_queues_not_served_ahead_fall_back_to_the_intersection(
    raw: redis.Redis, client: Client
) -> None:
    """300 queues not in the list hold older runs (lower bounds): the walk gives up
    after 8 pages of 32 and the claim intersects the list with ready-queues."""
    raw.hset(client.keys.workflow("wr"), "maxConcurrency", "100000")
    _claim(client)
    for i in range(300):
        _enqueue(client, "wr", f"other{i}")
    mine = [_enqueue(client, "wr", "q7"), _enqueue(client, "wr", "q1234")]
    got = [_claim(client), _claim(client), _claim(client)]
    assert [_id(g) for g in got] == [*mine, None]
    assert len(_listed(raw, client)) == 300  # the others stay listed
    _index_true(raw, client)


def test_a_claim_of_one_queue_that_finds_it_empty_unlists_it(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = enq("ws", queue="solo")
    assert _id(client.scripts.claim(("solo",), 5_000, new_token())[1]) == rid
    assert "solo" in _listed(raw, client)  # the hot path writes nothing more
    assert client.scripts.claim(("solo",), 5_000, new_token())[1] is None
    assert "solo" not in _listed(raw, client)


def _longest_script(lines: list[str]) -> int:
    """The most commands one script call ran, from MONITOR lines: a script's
    commands (``[0 lua]``) come one after the other, nothing between them."""
    longest = run = 0
    for line in lines:
        run = run + 1 if " lua] " in line else 0
        longest = max(longest, run)
    return longest


def test_the_scan_and_registration_of_5000_queues_holding_runs_are_cut_in_bounded_calls(
    raw: redis.Redis, client: Client, redis_url: str
) -> None:
    """A supervisor serving 5,000 queues, each holding runs: its children's first
    claim registered the list and read every queue's head in one call, and so
    did the scan every SCAN_EVERY s (and of an idle worker): 10,000 commands,
    50-320 ms of Redis (benchmarks/scale_supervisor.py) blocking every client.
    Now both are cut in calls of SCAN_CHUNK queues; the claims still take the
    lowest head of all and every queue holding runs stays listed."""
    queues = tuple(f"big{i}" for i in range(5000))
    raw.hset(client.keys.workflow("wt"), "maxConcurrency", "100000")
    ids = [_enqueue(client, "wt", q) for q in queues]
    with raw.pipeline(transaction=False) as pipe:  # distinct scores, the lowest last
        for i, (q, rid) in enumerate(zip(queues, ids, strict=True)):
            pipe.zadd(client.keys.q_ready(q), {rid: 10_000 - i})
        pipe.execute()
    raw.delete(client.keys.ready_queues)  # the scan must list them again
    got: list[object] = []
    with monitor(redis_url) as mon:
        got.append(_claim(client, queues))  # registers the list: a scan
        first = mon.snapshot()
        mon.clear()
        got.append(_claim(client, queues, scan=True))
        again = mon.snapshot()
    assert _longest_script(first) <= 2000, _longest_script(first)
    assert _longest_script(again) <= 2000, _longest_script(again)
    assert [_id(g) for g in got] == [ids[-1], ids[-2]]
    assert raw.zcard(client.keys.qset(digest(queues))) == 5000
    assert len(_listed(raw, client)) == 4998
    _index_true(raw, client)


def test_a_list_builder_that_died_half_way_leaves_no_short_list(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A worker that registered the first chunk of its 2,000-queue list and died:
    its chunk waits under a key of its own (expiring), never as the list, so
    the next claim of the list builds it whole and claims from its last queue."""
    queues = tuple(f"half{i}" for i in range(2000))
    qset = client.keys.qset(digest(queues))
    building = f"{qset}:b:dead"
    args = (client.keys.tag, "build", "1", "", 0, *queues[:SCAN_CHUNK])
    assert client.scripts.run("scan_queues", (qset, building), args, retry=True) == SCAN_CHUNK
    assert not raw.exists(qset) and 0 < raw.pttl(building) <= 60_000
    last = enq("wu", queue=queues[-1])
    assert _id(_claim(client, queues)) == last
    assert raw.zcard(qset) == 2000 and raw.zscore(qset, queues[-1]) == 1999


def test_the_fallback_past_queues_not_served_reads_a_few_heads_not_every_one(
    raw: redis.Redis, client: Client
) -> None:
    """300 queues not in the list hold older runs (lower bounds) and every one of
    the 2,000 queues served holds a run: the walk gives up after 8 pages and the
    intersection read the head of every queue of the list holding runs (2,000
    ZRANGEs a claim: 42-60 ms of Redis a claim with 5,000 of each, on every claim
    while such a backlog lasts). It reads them in the order of their bounds and
    stops past the lowest head found: a few heads a claim, the same run taken."""
    raw.hset(client.keys.workflow("ws"), "maxConcurrency", "100000")
    _claim(client)
    with raw.pipeline(transaction=False) as pipe:
        for i in range(300):
            _place_in(pipe, client, f"other{i}", new_run_id(), i + 1)
        pipe.execute()
    ids = [_enqueue(client, "ws", q) for q in QUEUES]
    with raw.pipeline(transaction=False) as pipe:  # distinct scores, after the others
        for i, (q, rid) in enumerate(zip(QUEUES, ids, strict=True)):
            pipe.zadd(client.keys.q_ready(q), {rid: 10_000 + 2_000 - i})
            pipe.zadd(client.keys.ready_queues, {q: 10_000 + 2_000 - i})
        pipe.execute()
    got: list[object] = []
    counts = command_counts(raw, lambda: got.append(_claim(client)))
    assert _id(got[0]) == ids[-1]
    assert counts.get("zrange", 0) <= 300 // 32 + 12, counts
    for _ in range(4):
        got.append(_claim(client))
    assert [_id(g) for g in got] == ids[-1:-6:-1]
    _index_true(raw, client)


def _place_in(pipe: Any, client: Client, q: str, run_id: str, score: int) -> None:
    """``_place`` in a pipeline: a run id (no record: never claimed, by this list
    at least) in a ready set at ``score``, its bound lowered."""
    pipe.zadd(client.keys.q_ready(q), {run_id: score})
    pipe.zadd(client.keys.ready_queues, {q: score}, lt=True)


def test_a_list_whose_building_key_vanished_half_way_is_not_registered_short(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The key a builder fills chunk by chunk vanished between two chunks (it
    expires a minute after the last one: a builder stalled that long; evicted
    under a volatile maxmemory policy; deleted by hand). The next chunks filled a
    new key from their own position on and the last renamed it onto the list: a
    list without its first queues, so every claim of it skipped their runs. A
    chunk that finds the key gone replies -1 and the builder starts again."""
    queues = tuple(f"gone{i}" for i in range(2000))
    qset = client.keys.qset(digest(queues))
    building = f"{qset}:b:stalled"
    tag = client.keys.tag
    for first in range(0, len(queues), SCAN_CHUNK):
        if first == SCAN_CHUNK:
            raw.delete(building)  # vanished after the first chunk
        last = "1" if first + SCAN_CHUNK >= len(queues) else ""
        chunk = queues[first : first + SCAN_CHUNK]
        args = (tag, "build", "1" if first == 0 else "", last, first, *chunk)
        got = client.scripts.run("scan_queues", (qset, building), args, retry=True)
        if first >= SCAN_CHUNK:
            assert got == -1, f"chunk at {first} was taken into a new key ({got})"
    assert not raw.exists(qset), f"a list of {raw.zcard(qset)} queues of 2000 registered"
    early = enq("wu", queue=queues[0])  # the next claim builds the list whole
    assert _id(_claim(client, queues)) == early
    assert raw.zcard(qset) == 2000
