"""cancel_run.lua, promote_runs.lua, reap_runs.lua."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.lostkeys import rearm_leases
from redflow_mp.maintenance import promote_due, reap_expired
from tests.helpers import command_counts, status_of, wait_until

pytestmark = pytest.mark.timeout(30)


def _wait_expired(client: Client, rid: str) -> None:
    """Until the server clock is past the run's lease expiry."""
    expiry = client.redis.zscore(client.keys.leases, rid)
    assert expiry is not None
    wait_until(lambda: client.server_time_ms() > expiry, 5, message="lease expiry")


# ------------------------------------------------------------------ cancel


def test_cancel_queued_run_is_immediate(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    assert client.scripts.cancel(rid, "not needed") == "canceled"
    h = raw.hgetall(k.run(rid))
    assert h[b"status"] == b"canceled"
    assert h[b"cancelReason"] == b"not needed"
    assert h[b"cancelRequestedAt"] and h[b"finishedAt"]
    err = msgspec.json.decode(h[b"errorJson"])
    assert err["type"] == "RunCanceledError" and "not needed" in err["message"]
    assert not raw.exists(k.q_ready("q"))
    assert raw.zscore(k.runs_status("canceled"), rid) is not None
    assert raw.zscore(k.runs_status("queued"), rid) is None


def test_cancel_scheduled_run_is_immediate(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = enq(run_at_ms=client.server_time_ms() + 60_000)
    assert client.scripts.cancel(rid, "") == "canceled"
    assert not raw.exists(client.keys.q_scheduled("q"))
    assert raw.hget(client.keys.run(rid), "cancelReason") is None


def test_cancel_parked_run_is_immediate(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    enq()
    parked = enq()
    client.scripts.claim(("q",), 5_000, new_token())
    client.scripts.claim(("q",), 5_000, new_token())
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    assert client.scripts.cancel(parked, "") == "canceled"
    assert not raw.exists(k.wf_waiting("wf"))


def test_cancel_running_run_only_requests(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    assert client.scripts.cancel(rid, "why") == "running"
    h = raw.hgetall(k.run(rid))
    assert h[b"status"] == b"running" and h[b"cancelRequestedAt"]
    assert raw.hget(k.run(rid), "lease") == tok.encode()
    assert raw.zscore(k.leases, rid) is not None
    first = h[b"cancelRequestedAt"]
    assert client.scripts.cancel(rid, "again") == "running"
    assert raw.hget(k.run(rid), "cancelRequestedAt") == first  # the first request stands


def test_cancel_unknown_and_finished_runs(client: Client, enq: Callable[..., str]) -> None:
    assert client.scripts.cancel("NOPE", "") is None
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    client.scripts.finalize(rid, tok, "succeeded", b"1")
    assert client.scripts.cancel(rid, "") == "succeeded"


# ----------------------------------------------------------------- promote


def test_promote_moves_only_due_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    now = client.server_time_ms()
    due = enq(run_at_ms=now + 60_000)
    later = enq(run_at_ms=now + 120_000, queue="q2")
    assert client.scripts.promote(100) == (0, now + 60_000, False)
    assert raw.zscore(k.due_queues, "q") == now + 60_000
    # make it due without waiting
    raw.zadd(k.q_scheduled("q"), {due: now - 1})
    raw.zadd(k.due_queues, {"q": now - 1})
    assert client.scripts.promote(100) == (1, now + 120_000, False)
    assert status_of(raw, client, due) == "queued"
    assert raw.zrange(k.q_ready("q"), 0, -1, withscores=True) == [
        (due.encode(), 9 * 2**44 + now - 1)
    ]
    assert raw.zscore(k.due_queues, "q") is None  # nothing scheduled there any more
    assert raw.llen(k.q_bell("q")) >= 1
    assert raw.zscore(k.runs_status("queued"), due) is not None
    assert raw.zscore(k.runs_status("scheduled"), due) is None
    assert status_of(raw, client, later) == "scheduled"
    assert client.scripts.promote(100) == (0, now + 120_000, False)


def test_promote_is_bounded_by_batch_and_skips_non_scheduled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    now = client.server_time_ms()
    ids = [enq(run_at_ms=now + 60_000) for _ in range(5)]
    raw.zadd(k.q_scheduled("q"), dict.fromkeys(ids, now - 1))
    raw.zadd(k.due_queues, {"q": now - 1})
    client.scripts.cancel(ids[0], "")
    raw.zadd(k.q_scheduled("q"), {ids[0]: now - 1})  # stale entry of a canceled run
    first = client.scripts.promote(2)
    assert first[0] <= 2 and first[2] is True  # a full batch: more to do
    while True:
        _, _, more = client.scripts.promote(2)
        if not more:
            break
    assert raw.zcard(k.q_scheduled("q")) == 0
    assert raw.zcard(k.q_ready("q")) == 4
    assert status_of(raw, client, ids[0]) == "canceled"
    assert client.scripts.promote(2) == (0, None, False)


def test_promote_batch_bounds_a_call_over_all_its_queues(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The batch bounds one call's work over all its queues: it was per queue, so
    100 queues with 500 due runs each were promoted in one call (50,000 runs,
    ~0.5 s of Redis blocked); now a call reads at most ``batch`` scheduled
    entries and a queue left with due runs comes first in the next call."""
    k = client.keys
    now = client.server_time_ms()
    ids = {q: [enq(queue=q, run_at_ms=now + 60_000) for _ in range(5)] for q in ("a", "b", "c")}
    for q, runs in ids.items():
        raw.zadd(k.q_scheduled(q), dict.fromkeys(runs, now - 1))
        raw.zadd(k.due_queues, {q: now - 1})
    counts = command_counts(raw, lambda: client.scripts.promote(4))
    # (two range reads more: runs:status:scheduled and :queued past now, the
    # clock-back look)
    assert counts["hset"] == 4 and counts["zrangebyscore"] <= 4, counts
    assert raw.zcard(k.q_ready("a")) == 4 and raw.zcard(k.q_ready("b")) == 0
    assert raw.zscore(k.due_queues, "a") == now - 1  # still due: next call
    promoted, _, more = client.scripts.promote(4)
    assert (promoted, more) == (4, True)
    assert raw.zcard(k.q_ready("a")) == 5 and raw.zcard(k.q_ready("b")) == 3
    total = 8
    while more:
        promoted, _, more = client.scripts.promote(4)
        assert promoted <= 4
        total += promoted
    assert total == 15
    assert all(raw.zcard(k.q_ready(q)) == 5 for q in ids)
    assert raw.zcard(k.due_queues) == 0


def test_promote_reads_only_queues_with_due_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    now = client.server_time_ms()
    enq(queue="later", run_at_ms=now + 60_000)
    soon = enq(queue="soon", run_at_ms=now + 60_000)
    enq(queue="soon", run_at_ms=now + 90_000)
    assert raw.zrange(k.due_queues, 0, -1, withscores=True) == [
        (b"later", now + 60_000),
        (b"soon", now + 60_000),
    ]
    raw.zadd(k.q_scheduled("soon"), {soon: now - 1})
    raw.zadd(k.due_queues, {"soon": now - 1})
    # a full batch of queues means "call again"; "later" is not read (not due)
    assert client.scripts.promote(10, queue_batch=1) == (1, now + 60_000, True)
    assert client.scripts.promote(10, queue_batch=1) == (0, now + 60_000, False)
    # the queue is scored by its new head
    assert raw.zscore(k.due_queues, "soon") == now + 90_000
    # the same due time again (LT keeps the earliest)
    enq(queue="soon", run_at_ms=now + 120_000)
    assert raw.zscore(k.due_queues, "soon") == now + 90_000


# -------------------------------------------------------------------- reap


def test_reap_requeues_a_run_whose_lease_expired(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    client.scripts.claim(("q",), 100, new_token())
    assert client.scripts.reap(100) == (0, [], False)  # lease still live: untouched
    assert status_of(raw, client, rid) == "running"
    _wait_expired(client, rid)
    released, requeued, more = client.scripts.reap(100)
    assert (released, requeued, more) == (0, [rid], False)
    assert status_of(raw, client, rid) == "queued"
    assert raw.zrange(k.q_ready("q"), 0, -1) == [rid.encode()]
    assert not raw.exists(k.leases)
    assert not raw.exists(k.wf_running("wf"))
    assert raw.hget(k.run(rid), "attempt") == b"1"
    _, again = client.scripts.claim(("q",), 5_000, new_token())
    assert again is not None and again.id == rid


def test_after_a_gap_the_reaper_holds_off_a_lease_and_the_holder_renews(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A Redis stall: every lease expired because nobody could renew, not because
    its holder died. The reaper's first call after the gap takes nothing back for
    a lease; the holder renews meanwhile; a holder that stays silent is reaped
    once the hold is over."""
    k = client.keys
    live, dead = enq(max_concurrency=2), enq(max_concurrency=2)
    live_tok, dead_tok = new_token(), new_token()
    client.scripts.claim(("q",), 100, live_tok)
    client.scripts.claim(("q",), 100, dead_tok)
    now = client.server_time_ms()
    released, ids, more, seen, hold, _ = client.scripts.reap_guarded(100, now, 0, 1_000, 600)
    assert (released, more) == (0, False)
    assert (ids, hold) == ([], 0)  # no gap, leases live: nothing to do
    _wait_expired(client, live)
    _wait_expired(client, dead)
    # The previous call was 5 s ago (server time): a gap longer than 1 s.
    _, ids, _, seen2, hold, _ = client.scripts.reap_guarded(100, seen - 5_000, 0, 1_000, 600)
    assert ids == [] and hold >= seen2 + 600 - 1  # both expired, neither reaped
    assert status_of(raw, client, live) == status_of(raw, client, dead) == "running"
    # The live holder renews its expired lease (nobody acted on the expiry).
    assert client.scripts.renew(60_000, [(live, live_tok)]) == [(True, False)]
    _, ids, _, seen3, hold2, _ = client.scripts.reap_guarded(100, seen2, hold, 1_000, 600)
    assert ids == [] and hold2 == hold  # still holding (no new gap, hold not over)
    wait_until(lambda: client.server_time_ms() >= hold, 5, message="end of the hold")
    _, ids, _, _, hold3, _ = client.scripts.reap_guarded(100, seen3, hold2, 1_000, 600)
    assert ids == [dead] and hold3 == 0  # the silent holder is reaped, the live one kept
    assert status_of(raw, client, live) == "running"
    assert status_of(raw, client, dead) == "queued"
    assert client.scripts.renew(60_000, [(dead, dead_tok)]) == [(False, False)]
    assert raw.zscore(k.leases, live) is not None


def test_reap_drops_lease_entries_of_finished_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    client.scripts.finalize(rid, tok, "succeeded", b"1")
    assert not raw.exists(k.leases)  # every exit from running drops the entry
    raw.zadd(k.leases, {rid: 1, "GONE-RUN": 1})  # leftover entries
    assert client.scripts.reap(100) == (0, [], False)
    assert not raw.exists(k.leases)
    assert status_of(raw, client, rid) == "succeeded"


def test_reap_releases_parked_runs_when_slots_are_free(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    first = enq(max_concurrency=1)
    parked = enq(max_concurrency=1)
    client.scripts.claim(("q",), 5_000, new_token())
    client.scripts.claim(("q",), 5_000, new_token())
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    assert client.scripts.reap(100) == (0, [], False)  # no free slot: stays parked
    # a raised limit (synced metadata) frees a slot
    raw.hset(k.workflow("wf"), "maxConcurrency", 2)
    assert client.scripts.reap(100) == (1, [], False)
    assert raw.zrange(k.q_ready("q"), 0, -1) == [parked.encode()]
    assert not raw.exists(k.parked)
    assert status_of(raw, client, first) == "running"


def test_reap_frees_a_slot_held_by_a_run_redis_lost(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # The slot holder's hash evicted (allkeys-lru) or deleted: a slot leaves the
    # gate only at its run's finish, so the parked run waited for good.
    k = client.keys
    lost = enq(max_concurrency=1)
    parked = enq(max_concurrency=1)
    client.scripts.claim(("q",), 5_000, new_token())
    client.scripts.claim(("q",), 5_000, new_token())
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    raw.delete(k.run(lost))
    released, ids, _, _, _, ghosts = client.scripts.reap_guarded(100, None, 0, 1_000, 600)
    assert (released, ghosts) == (1, [f"wf {lost}"])
    assert ids == []  # its lease entry is dropped as stale, not requeued
    assert raw.smembers(k.wf_running("wf")) == set()
    assert raw.zrange(k.q_ready("q"), 0, -1) == [parked.encode()]


def test_rearm_leases_gives_running_runs_redis_lost_from_leases_an_entry(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # `leases` evicted or deleted: the lease check needs the entry, so the holder
    # gave the run up, and the reaper (which reads `leases` only) never saw it.
    k = client.keys
    lost, kept = enq(max_concurrency=5), enq(max_concurrency=5)
    lost_tok = new_token()
    client.scripts.claim(("q",), 5_000, lost_tok)
    client.scripts.claim(("q",), 5_000, new_token())
    raw.zrem(k.leases, lost)
    assert client.scripts.renew(5_000, [(lost, lost_tok)]) == [(False, False)]
    before = client.server_time_ms()
    assert rearm_leases(client, 0, 5_000) == (0, [lost])
    expiry = raw.zscore(k.leases, lost)
    assert expiry is not None and expiry >= before + 5_000
    assert rearm_leases(client, 0, 5_000) == (0, [])  # there now: left alone
    assert raw.zscore(k.leases, kept) is not None  # the other one's entry untouched
    # a holder still at work renews it (its token is the run's)
    assert client.scripts.renew(5_000, [(lost, lost_tok)]) == [(True, False)]


def test_reap_keeps_the_slots_of_live_runs_while_the_gate_is_full(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [enq(max_concurrency=2) for _ in range(3)]
    for _ in range(3):
        client.scripts.claim(("q",), 5_000, new_token())
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [ids[2].encode()]
    assert client.scripts.reap_guarded(100, None, 0, 1_000, 600)[5] == []
    assert raw.smembers(k.wf_running("wf")) == {ids[0].encode(), ids[1].encode()}
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [ids[2].encode()]


def test_reap_releases_parked_runs_up_to_the_limit_stored_on_them_without_metadata(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # No synced metadata (an in-process Worker, or a workflow whose metadata was
    # removed): the claim goes by the limit stored on each run (3 here); the
    # reaper went by 1, so a slot freed without a release (the released run
    # canceled before its claim) stayed empty while runs were parked.
    k = client.keys
    ids = [enq(max_concurrency=3) for _ in range(6)]
    tokens = [new_token() for _ in range(3)]
    for tok, rid in zip(tokens, ids[:3], strict=True):
        assert client.scripts.claim(("q",), 5_000, tok)[1] is not None
        assert status_of(raw, client, rid) == "running"
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is None  # 3 parked
    assert raw.zcard(k.wf_waiting("wf")) == 3
    assert client.scripts.finalize(ids[0], tokens[0], "succeeded", b'"ok"') == "succeeded"
    assert raw.zrange(k.q_ready("q"), 0, -1) == [ids[3].encode()]  # released
    assert client.scripts.cancel(ids[3], "") == "canceled"  # before any claim took it
    # 2 running of 3: the reaper gives the free slot to the next parked run
    assert client.scripts.reap(100) == (1, [], False)
    assert raw.zrange(k.q_ready("q"), 0, -1) == [ids[4].encode()]
    got = client.scripts.claim(("q",), 5_000, new_token())[1]
    assert got is not None and got.id == ids[4]
    assert client.scripts.reap(100) == (0, [], False)  # 3 running: the last one waits
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [ids[5].encode()]


def test_one_reap_call_releases_at_most_a_batch_of_parked_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Parked runs were released up to a batch per workflow: 1,000 parked
    workflows given free slots at once (a raised max_concurrency) made one call
    move 200,000 runs. Now a batch in all, and the reply asks for another call."""
    k = client.keys
    for w in range(3):
        for _ in range(31):
            enq(workflow=f"w{w}", max_concurrency=1)
    while client.scripts.claim(("q",), 5_000, new_token())[1] is not None:
        pass
    assert [raw.zcard(k.wf_waiting(f"w{w}")) for w in range(3)] == [30, 30, 30]
    for w in range(3):
        raw.hset(k.workflow(f"w{w}"), "maxConcurrency", 1_000)
    released, _, more = client.scripts.reap(40)
    assert released == 40, f"one call released {released} parked runs (batch 40)"
    assert more
    assert reap_expired(client, batch=40)[0] == 50
    assert not raw.exists(k.parked)
    assert raw.zcard(k.q_ready("q")) == 90


def test_one_reap_call_reads_at_most_a_batch_of_parked_workflows(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Every reap call read every parked workflow (SCARD and HGET each): 10,000
    workflows with runs waiting for a slot made each call ~10 ms, up to 100
    calls a tick. A call now draws at most a batch of them."""
    k = client.keys
    for w in range(150):
        enq(workflow=f"w{w}", max_concurrency=1)
        enq(workflow=f"w{w}", max_concurrency=1)
    while client.scripts.claim(("q",), 5_000, new_token())[1] is not None:
        pass
    assert raw.scard(k.parked) == 150
    counts = command_counts(raw, lambda: client.scripts.reap(50))
    assert counts.get("scard", 0) <= 50, f"one call read {counts.get('scard')} parked workflows"


def test_reap_of_a_cancel_requested_run_ends_it_canceled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    client.scripts.claim(("q",), 100, new_token())
    assert client.scripts.cancel(rid, "bye") == "running"
    _wait_expired(client, rid)
    assert client.scripts.reap(100) == (0, [rid], False)
    assert status_of(raw, client, rid) == "canceled"
    assert not raw.exists(k.q_ready("q"))
    assert not raw.exists(k.wf_running("wf"))


# ------------------------------------------------------------------ requeue_claimed


def test_requeue_claimed_puts_back_only_the_run_with_that_token(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    mine, other = enq(workflow="a"), enq(workflow="b")
    lost = new_token()
    _, c1 = client.scripts.claim(("q",), 30_000, lost)
    _, c2 = client.scripts.claim(("q",), 30_000, new_token())
    assert c1 is not None and c1.id == mine and c2 is not None and c2.id == other
    assert client.scripts.requeue_claimed(lost, "worker killed by SIGKILL", 30_000) == [
        (mine, "queued")
    ]
    assert status_of(raw, client, mine) == "queued"
    assert raw.hget(k.run(mine), "lastCrash") == b"worker killed by SIGKILL"
    assert raw.hget(k.run(mine), "crashCount") in (None, b"0")  # it never started
    assert raw.zrange(k.q_ready("q"), 0, -1) == [mine.encode()]
    assert raw.zscore(k.leases, mine) is None
    assert status_of(raw, client, other) == "running"  # another worker's run is untouched
    assert raw.zrange(k.leases, 0, -1) == [other.encode()]
    # a token nobody holds any more finds nothing, and a second call is a no-op
    assert client.scripts.requeue_claimed(lost, "again", 30_000) == []


def test_requeue_claimed_ends_a_cancel_requested_run_instead(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = enq()
    lost = new_token()
    client.scripts.claim(("q",), 30_000, lost)
    assert client.scripts.cancel(rid, "stop it") == "running"  # only requested
    assert client.scripts.requeue_claimed(lost, "worker killed by SIGKILL", 30_000) == [
        (rid, "canceled")
    ]
    assert status_of(raw, client, rid) == "canceled"
    assert not raw.exists(client.keys.q_ready("q"))


# ------------------------------------------------------------ cost at scale


def _fill_ready(client: Client, n: int, queue: str = "q", workflow: str = "wf") -> list[str]:
    return [
        client.scripts.enqueue(
            new_run_id(), workflow, queue, b"{}", 1, 0, "", 1000, "", "", 1_000_000, None
        )[0]
        for _ in range(n)
    ]


def test_reaper_finds_an_expired_lease_behind_1000_live_ones(
    raw: redis.Redis, client: Client
) -> None:
    """Issue 10 #3: more than a batch of healthy runs in flight on one queue, and a
    newer run whose worker vanished: the reaper finds it at once."""
    _fill_ready(client, 1_000)
    for _ in range(1_000):
        assert client.scripts.claim(("q",), 600_000, new_token())[1] is not None
    lost = _fill_ready(client, 1)[0]
    _, claimed = client.scripts.claim(("q",), 100, new_token())
    assert claimed is not None and claimed.id == lost
    wait_until(
        lambda: client.server_time_ms() > claimed.started_at + 150, 5, message="lease expiry"
    )
    released, requeued = reap_expired(client)
    assert (released, requeued) == (0, [lost])
    assert status_of(raw, client, lost) == "queued"
    assert raw.zcard(client.keys.runs_status("running")) == 1_000


def test_reap_expired_takes_every_expired_lease_in_one_call(
    raw: redis.Redis, client: Client
) -> None:
    ids = _fill_ready(client, 450)
    started = 0
    for _ in ids:
        _, claimed = client.scripts.claim(("q",), 100, new_token())
        assert claimed is not None
        started = claimed.started_at
    wait_until(lambda: client.server_time_ms() > started + 150, 5, message="lease expiry")
    _, requeued = reap_expired(client)
    assert sorted(requeued) == sorted(ids)
    assert raw.zcard(client.keys.runs_status("queued")) == 450
    assert not raw.exists(client.keys.runs_status("running"))


# Commands whose cost does not grow with the size of the collection they touch
# beyond O(log N) (what a per-run path may issue).
_FLAT = frozenset(
    {
        "hmget", "hget", "hset", "hsetnx", "hincrby", "hdel", "exists", "get", "set", "del",
        "zadd", "zrem", "zscore", "zcard", "zpopmin", "sadd", "srem", "scard", "sismember",
        "llen", "lpush", "publish", "pexpireat", "time",
        "type",  # the slot probe, on a cluster only (luafiles.SLOT_PROBE)
    }
)  # fmt: skip


def test_cancel_of_a_queued_run_is_flat_with_20000_ready(raw: redis.Redis, client: Client) -> None:
    """Issue 10 #9: no scan of a whole ready list to cancel one run."""
    ids = _fill_ready(client, 20_000)
    counts = command_counts(raw, lambda: client.scripts.cancel(ids[10_000], ""))
    assert set(counts) <= _FLAT, counts
    assert sum(counts.values()) <= 20, counts
    assert status_of(raw, client, ids[10_000]) == "canceled"
    assert raw.type(client.keys.q_ready("q")) == b"zset"
    assert raw.zcard(client.keys.q_ready("q")) == 19_999


def test_claim_of_one_run_by_id_is_flat_with_20000_ready(raw: redis.Redis, client: Client) -> None:
    """Issue 10 #9: the inline assist of step.run_workflow claims its child by id."""
    ids = _fill_ready(client, 20_000)
    got: list[object] = []
    counts = command_counts(
        raw,
        lambda: got.append(
            client.scripts.claim(("q",), 5_000, new_token(), None, only_id=ids[10_000])[1]
        ),
    )
    assert set(counts) <= _FLAT, counts
    assert sum(counts.values()) <= 20, counts
    assert status_of(raw, client, ids[10_000]) == "running"


def test_promote_and_reap_are_flat_with_20000_known_queues(
    raw: redis.Redis, client: Client
) -> None:
    """Issue 10 #10: with nothing due, the promoter and the reaper cost a few
    commands however many queue names were ever used."""
    raw.sadd(client.keys.queues, *(f"q{i}" for i in range(20_000)))
    counts = command_counts(raw, lambda: (promote_due(client), reap_expired(client)))
    assert set(counts) <= _FLAT | {"zrangebyscore", "zrange", "srandmember"}, counts
    # (2 of them: the promoter's look at runs:status:scheduled and :queued past
    # now, for runs placed at a Redis clock that was ahead and went back); on a
    # cluster (--redis-topology=cluster) each of the 2 script calls probes its slot
    probes = 2 if client.transport.clustered else 0
    assert counts.get("type", 0) == probes, counts
    assert sum(counts.values()) <= 10 + probes, counts
