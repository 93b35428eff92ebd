"""claim_run.lua: the lowest ready score (highest priority, then oldest) over
the queues -> leased and running; the max_concurrency gate (atomic, parks the
run, released when a slot frees); skipped entries; finish + claim in one call,
fenced."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.queueset import SCAN_CHUNK
from tests.helpers import command_counts, status_of, wait_until

pytestmark = pytest.mark.timeout(30)


def _claim(
    client: Client, *queues: str, lease_ms: int = 5_000, token: str | None = None
) -> tuple[str, object]:
    return client.scripts.claim(tuple(queues or ("q",)), lease_ms, token or new_token())


def test_claim_takes_oldest_first_and_marks_running(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    first = enq(input_json=b'{"n":1}', max_attempts=4, parent="P", cron_id="C", timeout_ms=900)
    second = enq(input_json=b'{"n":2}')
    token = new_token()
    finished, claimed = client.scripts.claim(("q",), 3_000, token)
    assert finished == ""
    assert claimed is not None
    assert claimed.id == first
    assert (claimed.workflow, claimed.queue, claimed.input_json) == ("wf", "q", b'{"n":1}')
    assert (claimed.attempt, claimed.max_attempts) == (1, 4)
    assert (claimed.parent_run_id, claimed.cron_id, claimed.timeout_ms) == ("P", "C", 900)
    assert claimed.token == token
    assert claimed.steps == {}
    assert claimed.started_at > 0
    assert status_of(raw, client, first) == "running"
    assert raw.hget(k.run(first), "startedAt") == str(claimed.started_at).encode()
    assert raw.hget(k.run(first), "lease") == token.encode()
    expiry = raw.zscore(k.leases, first)
    assert expiry is not None and 0 < expiry - client.server_time_ms() <= 3_000
    assert raw.zscore(k.runs_status("running"), first) is not None
    assert raw.zscore(k.runs_status("queued"), first) is None
    assert raw.zrange(k.q_ready("q"), 0, -1) == [second.encode()]


def test_claim_on_empty_queues_returns_nothing(client: Client) -> None:
    assert client.scripts.claim(("q", "r"), 1_000, new_token()) == ("", None)


def test_claim_takes_the_oldest_over_all_queues(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    a = enq("wa", queue="a")
    b = enq("wb", queue="b")
    raw.zadd(client.keys.q_ready("b"), {b: 1})  # b became ready first
    _, got = client.scripts.claim(("a", "b"), 1_000, new_token())
    assert got is not None and got.id == b
    _, got = client.scripts.claim(("b", "a"), 1_000, new_token())
    assert got is not None and got.id == a
    # equal scores: the first queue named wins
    c, d = enq("wc", queue="c"), enq("wd", queue="d")
    raw.zadd(client.keys.q_ready("c"), {c: 5})
    raw.zadd(client.keys.q_ready("d"), {d: 5})
    _, got = client.scripts.claim(("d", "c"), 1_000, new_token())
    assert got is not None and got.id == d


def test_claim_returns_recorded_steps(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid = enq()
    # Steps exist only for a run that started before (a retry, or a run put back
    # after its worker died): startedAt is set then.
    raw.hset(client.keys.run(rid), "startedAt", 1)
    raw.hset(client.keys.run_steps(rid), "s1", b'{"status":"succeeded"}')
    _, got = client.scripts.claim(("q",), 1_000, new_token())
    assert got is not None and got.steps == {"s1": b'{"status":"succeeded"}'}


def test_concurrency_gate_parks_over_the_limit_and_releases_on_finish(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ids = [enq(max_concurrency=2) for _ in range(3)]
    tokens = [new_token() for _ in range(3)]
    got = [client.scripts.claim(("q",), 5_000, t)[1] for t in tokens]
    assert [g.id if g else None for g in got] == [ids[0], ids[1], None]
    # the third is parked (never dropped): queued, in wf-waiting, in no ready set
    assert status_of(raw, client, ids[2]) == "queued"
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [ids[2].encode()]
    assert raw.smembers(k.parked) == {b"wf"}
    assert raw.scard(k.wf_running("wf")) == 2
    assert not raw.exists(k.q_ready("q"))
    assert sorted(raw.zrange(k.leases, 0, -1)) == sorted([ids[1].encode(), ids[0].encode()])
    # more claims do not touch the parked run
    assert client.scripts.claim(("q",), 5_000, new_token()) == ("", None)
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [ids[2].encode()]

    # finishing one running run releases the parked one to the front of ready
    assert client.scripts.finalize(ids[0], tokens[0], "succeeded", b'"ok"') == "succeeded"
    assert not raw.exists(k.wf_waiting("wf"))
    assert raw.smembers(k.parked) == set()
    assert raw.zrange(k.q_ready("q"), 0, -1) == [ids[2].encode()]
    assert raw.smembers(k.wf_running("wf")) == {ids[1].encode()}
    _, third = client.scripts.claim(("q",), 5_000, new_token())
    assert third is not None and third.id == ids[2]
    assert raw.scard(k.wf_running("wf")) == 2


def test_concurrency_limit_from_synced_metadata_wins(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    raw.hset(client.keys.workflow("wf"), "maxConcurrency", 1)
    enq(max_concurrency=5)
    enq(max_concurrency=5)
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is not None
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is None
    assert raw.zcard(client.keys.wf_waiting("wf")) == 1


def test_concurrency_is_per_workflow(client: Client, enq: Callable[..., str]) -> None:
    enq("a", max_concurrency=1)
    enq("a", max_concurrency=1)
    b = enq("b", max_concurrency=1)
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is not None
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == b  # a's second run parked, b claimed in the same call


def test_retry_and_failure_release_parked_runs_too(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    a = enq(max_concurrency=1, max_attempts=2)
    b = enq(max_concurrency=1)
    tok = new_token()
    assert client.scripts.claim(("q",), 5_000, tok)[1] is not None
    assert client.scripts.claim(("q",), 5_000, new_token())[1] is None
    assert raw.zrange(k.wf_waiting("wf"), 0, -1) == [b.encode()]
    err = msgspec.json.encode({"type": "ValueError", "message": "x"})
    # The retry below scores a by the server's "now": let the server's millisecond
    # move past b's createdAt, or the two scores tie and the ids decide the order.
    created_b = int(raw.hget(k.run(b), "createdAt") or 0)
    wait_until(lambda: client.server_time_ms() > created_b, 5, message="the clock to tick")
    assert client.scripts.finalize(a, tok, "retry", err, 0) == "queued"
    # b released first (at its createdAt), a retried at the back (now)
    assert raw.zrange(k.q_ready("q"), 0, -1) == [b.encode(), a.encode()]
    tok_b = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok_b)
    assert got is not None and got.id == b
    assert client.scripts.finalize(b, tok_b, "failed", err) == "failed"
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == a and got.attempt == 2


def test_stale_and_canceled_entries_are_dropped_not_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    ghost = "NO-SUCH-RUN"
    raw.zadd(k.q_ready("q"), {ghost: 1})
    canceled = enq()
    raw.hset(k.run(canceled), "cancelRequestedAt", 1)
    live = enq()
    # lowest score first: ghost, canceled, then live
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == live
    assert status_of(raw, client, canceled) == "canceled"
    assert not raw.exists(k.q_ready("q"))
    assert raw.zrange(k.leases, 0, -1) == [live.encode()]
    assert not raw.exists(k.run(ghost))


def test_corrupted_run_hash_fails_clearly_and_claim_goes_on(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    no_workflow = enq()
    raw.hdel(k.run(no_workflow), "workflow")
    no_input = enq()
    raw.hdel(k.run(no_input), "inputJson")
    bad_attempt = enq()
    raw.hset(k.run(bad_attempt), "attempt", "three")
    bad_created = enq()
    raw.hset(k.run(bad_created), "createdAt", "yesterday")
    bad_status = enq()
    raw.hset(k.run(bad_status), "status", "garbage")
    live = enq()
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == live
    for rid in (no_workflow, no_input, bad_attempt, bad_created, bad_status):
        assert status_of(raw, client, rid) == "failed", rid
        err = msgspec.json.decode(raw.hget(k.run(rid), "errorJson") or b"{}")
        assert err["type"] == "CorruptRecord", rid
        assert err["retryable"] is False
        assert raw.hget(k.run(rid), "finishedAt") is not None
    assert not raw.exists(k.q_ready("q"))
    assert raw.zrange(k.leases, 0, -1) == [live.encode()]


def test_wrong_type_run_key_does_not_break_claim(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.set(k.run("NOT-A-HASH"), "garbage")
    raw.zadd(k.q_ready("q"), {"NOT-A-HASH": 1})
    live = enq()
    _, got = client.scripts.claim(("q",), 5_000, new_token())
    assert got is not None and got.id == live
    assert raw.zrange(k.leases, 0, -1) == [live.encode()]
    assert not raw.exists(k.q_ready("q"))


def test_claim_only_id_takes_that_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    a = enq()
    b = enq()
    _, got = client.scripts.claim(("other", "q"), 5_000, new_token(), None, only_id=b)
    assert got is not None and got.id == b
    assert raw.zrange(client.keys.q_ready("q"), 0, -1) == [a.encode()]
    assert client.scripts.claim(("q",), 5_000, new_token(), None, only_id="missing") == ("", None)


def test_finish_and_claim_in_one_call(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    a = enq()
    b = enq()
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == a
    finished, nxt = client.scripts.claim(
        ("q",), 5_000, new_token(), ("succeeded", a, tok, b'{"ok":1}', 0)
    )
    assert finished == "succeeded"
    assert nxt is not None and nxt.id == b
    assert status_of(raw, client, a) == "succeeded"
    assert raw.hget(client.keys.run(a), "outputJson") == b'{"ok":1}'


def test_finish_in_claim_is_fenced_by_the_lease_token(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    a = enq()
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    raw.hset(k.run(a), "lease", "someone-else")
    finished, nxt = client.scripts.claim(("q",), 5_000, "", ("succeeded", a, tok, b"1", 0))
    assert (finished, nxt) == ("lease-lost", None)
    assert status_of(raw, client, a) == "running"
    assert raw.hget(k.run(a), "outputJson") is None
    assert raw.hget(k.run(a), "lease") == b"someone-else"
    # finish-only call (empty token) claims nothing
    enq()
    assert client.scripts.claim(("q",), 5_000, "", None)[1] is None


def test_finish_and_claim_on_a_queue_left_empty_finishes_and_claims_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The drain's last call: the finish is applied, nothing is claimed, and the
    worker (given nothing) goes to its blocking wait."""
    k = client.keys
    a = enq()
    tok = new_token()
    _, got = client.scripts.claim(("q",), 5_000, tok)
    assert got is not None and got.id == a
    finished, nxt = client.scripts.claim(("q",), 5_000, new_token(), ("succeeded", a, tok, b"1", 0))
    assert (finished, nxt) == ("succeeded", None)
    assert status_of(raw, client, a) == "succeeded"
    assert raw.zscore(k.leases, a) is None
    assert raw.zscore(k.ready_queues, "q") is None  # out of ready-queues: empty


def test_a_fenced_finish_riding_on_a_claim_changes_nothing_and_the_claim_goes_on(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The lease of run N was lost (taken over): its finish is refused, run N is
    left to its new holder, and run N+1 is claimed by the same call."""
    k = client.keys
    a = enq()
    b = enq("wf2")  # another workflow: "wf", with no synced metadata, has a limit of 1
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    raw.hset(k.run(a), "lease", "someone-else")
    finished, nxt = client.scripts.claim(("q",), 5_000, new_token(), ("succeeded", a, tok, b"1", 0))
    assert finished == "lease-lost"
    assert nxt is not None and nxt.id == b
    assert status_of(raw, client, a) == "running"
    assert raw.hget(k.run(a), "outputJson") is None
    assert raw.hget(k.run(a), "lease") == b"someone-else"


# ---------------------------------------------------------------- priority


def _enqueue_many(client: Client, n: int, *, queue: str = "q", priority: int = 0) -> list[str]:
    return [
        client.scripts.enqueue(
            new_run_id(), "wf", queue, b"{}", 1, 0, "", 0, "", "", 100_000, None,
            priority=priority,
        )[0]
        for _ in range(n)
    ]  # fmt: skip


def _claim_ids(client: Client, queues: tuple[str, ...], n: int) -> list[str]:
    out = []
    for _ in range(n):
        _, got = client.scripts.claim(queues, 30_000, new_token())
        assert got is not None
        out.append(got.id)
    return out


def test_claim_takes_the_highest_priority_first_then_the_oldest(client: Client) -> None:
    low = _enqueue_many(client, 1_000, priority=0)
    high = _enqueue_many(client, 10, priority=9)
    assert _claim_ids(client, ("q",), 10) == high
    assert _claim_ids(client, ("q",), 3) == low[:3]


def test_priority_orders_the_claim_across_queues(client: Client) -> None:
    a_low = _enqueue_many(client, 500, queue="a", priority=0)
    b_low = _enqueue_many(client, 500, queue="b", priority=0)
    a_high = _enqueue_many(client, 5, queue="a", priority=9)
    b_high = _enqueue_many(client, 5, queue="b", priority=9)
    mid = _enqueue_many(client, 2, queue="b", priority=5)
    got = _claim_ids(client, ("a", "b"), 12)
    # every priority-9 run first, oldest first whatever its queue, then the 5s
    assert got[:10] == a_high + b_high
    assert got[10:] == mid
    assert _claim_ids(client, ("b", "a"), 2) == [a_low[0], a_low[1]]
    assert b_low[0] not in got


def test_ready_score_is_priority_band_then_time(raw: redis.Redis, client: Client) -> None:
    """Scores are exact integers: (9 - priority) * 2**44 + the ms the run became ready."""
    (rid,) = _enqueue_many(client, 1, priority=3)
    created = int(raw.hget(client.keys.run(rid), "createdAt") or 0)
    assert raw.hget(client.keys.run(rid), "priority") == b"3"
    assert raw.zscore(client.keys.q_ready("q"), rid) == 6 * 2**44 + created
    (plain,) = _enqueue_many(client, 1)
    assert raw.hget(client.keys.run(plain), "priority") is None  # 0 is not written


@pytest.mark.parametrize("bad", [-1, 10, 2.5, "1", True, None])
def test_priority_out_of_range_is_refused(client: Client, bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="priority"):
        client.scripts.enqueue(
            new_run_id(), "wf", "q", b"{}", 1, 0, "", 0, "", "", None, None,
            priority=bad,  # type: ignore[arg-type]
        )  # fmt: skip
    assert client.scripts.claim(("q",), 1_000, new_token()) == ("", None)


def test_a_claim_over_1000_queues_reads_only_the_heads_of_blocks_holding_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Every claim read the head of every queue served: one ZRANGE per queue (a
    worker serving 1,000 queues: 1,000 ZRANGEs, ~0.9 ms of Redis, per claim, also
    when nothing is ready). Now one EXISTS per 32 queues, and the heads of the
    blocks of 32 that hold runs; the order over all the queues is unchanged.
    (The scan of a registered list: the safety net's claim, see test_many_queues.)"""
    queues = [f"q{i}" for i in range(1000)]
    client.scripts.claim(tuple(queues), 1_000, new_token())  # registers the list
    old, new = enq("wa", queue="q5"), enq("wb", queue="q999")
    high = enq("wc", queue="q500")
    raw.zadd(client.keys.q_ready("q5"), {old: 10})
    raw.zadd(client.keys.q_ready("q999"), {new: 20})
    raw.zadd(client.keys.q_ready("q500"), {high: 30 - 2**44})  # priority 1 beats older runs
    got: list[object] = []

    def claim(order: list[str]) -> None:
        got.append(client.scripts.claim(tuple(order), 1_000, new_token(), scan=True)[1])

    counts = command_counts(raw, lambda: claim(queues))
    assert counts.get("zrange", 0) <= 3 * 32 and counts.get("exists", 0) <= 32, counts
    claim(queues)
    claim(queues)
    assert [getattr(g, "id", None) for g in got] == [high, old, new]
    # equal scores in two blocks: the first queue named wins, whatever the block
    a, b = enq("wd", queue="q40"), enq("we", queue="q700")
    raw.zadd(client.keys.q_ready("q40"), {a: 5})
    raw.zadd(client.keys.q_ready("q700"), {b: 5})
    claim(queues[700:] + queues[:700])
    assert getattr(got[-1], "id", None) == b
    none = [f"none{i}" for i in range(2000)]
    claim(none)  # registers the list
    empty = command_counts(raw, lambda: claim(none))
    assert got[-1] is None
    # the reads of the registered list, SCAN_CHUNK names a call (scan_queues.lua),
    # one EXISTS per 32 of them; then the claim's walk of ready-queues (one page)
    # and its check that the list is there
    chunks = -(-2000 // SCAN_CHUNK)
    assert empty.get("zrange", 0) == chunks + 1 and empty.get("exists", 0) <= 64, empty


def test_a_resent_claim_gets_the_run_its_lost_reply_named_and_nothing_else(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    first = enq(input_json=b'{"n":1}')
    second = enq("wf2", input_json=b'{"n":2}')  # another workflow: a slot of its own
    token = new_token()
    _, lost = client.scripts.claim(("q",), 5_000, token)  # its reply "lost"
    assert lost is not None and lost.id == first
    raw.zadd(k.leases, {first: client.server_time_ms() + 100})  # about to expire
    _, again = client.scripts.claim(("q",), 5_000, token, resend=True)
    assert again is not None and again.id == first and again.token == token
    assert (again.input_json, again.attempt, again.started_at) == (
        b'{"n":1}',
        1,
        lost.started_at,
    )
    expiry = raw.zscore(k.leases, first)
    assert expiry is not None and expiry - client.server_time_ms() > 4_000  # leased again
    assert raw.zrange(k.q_ready("q"), 0, -1) == [second.encode()]  # nothing else taken
    # Another token's resend finds nothing of its own: it claims the next run.
    _, other = client.scripts.claim(("q",), 5_000, new_token(), resend=True)
    assert other is not None and other.id == second


def test_a_resent_claim_whose_run_was_put_back_claims_anew(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    first = enq()
    token = new_token()
    _, lost = client.scripts.claim(("q",), 5_000, token)
    assert lost is not None
    assert [i for i, _ in client.scripts.requeue_claimed(token, "test", 5_000)] == [first]
    _, again = client.scripts.claim(("q",), 5_000, token, resend=True)
    assert again is not None and again.id == first  # claimed again from the queue
    assert status_of(raw, client, first) == "running"
