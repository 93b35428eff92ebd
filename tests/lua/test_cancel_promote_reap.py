"""cancel_run.lua, promote_runs.lua, reap_runs.lua."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from tests.helpers import status_of, wait_until

pytestmark = pytest.mark.timeout(30)


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
    assert raw.lrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
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
    assert raw.get(k.run_lease(rid)) == tok.encode()
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
    assert client.scripts.promote(100) == (0, now + 60_000)
    raw.zadd(k.q_scheduled("q"), {due: now - 1})  # make it due without waiting
    promoted, earliest = client.scripts.promote(100)
    assert (promoted, earliest) == (1, now + 120_000)
    assert status_of(raw, client, due) == "queued"
    assert raw.lrange(k.q_ready("q"), 0, -1) == [due.encode()]
    assert raw.llen(k.q_bell("q")) >= 1
    assert raw.zscore(k.runs_status("queued"), due) is not None
    assert raw.zscore(k.runs_status("scheduled"), due) is None
    assert status_of(raw, client, later) == "scheduled"
    assert client.scripts.promote(100) == (0, now + 120_000)


def test_promote_is_bounded_by_batch_and_skips_non_scheduled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    now = client.server_time_ms()
    ids = [enq(run_at_ms=now + 60_000) for _ in range(5)]
    raw.zadd(k.q_scheduled("q"), dict.fromkeys(ids, now - 1))
    client.scripts.cancel(ids[0], "")
    raw.zadd(k.q_scheduled("q"), {ids[0]: now - 1})  # stale entry of a canceled run
    assert client.scripts.promote(2)[0] <= 2
    total = 0
    while True:
        n, _ = client.scripts.promote(2)
        if n == 0 and raw.zcard(k.q_scheduled("q")) == 0:
            break
        total += n
    assert raw.llen(k.q_ready("q")) == 4
    assert status_of(raw, client, ids[0]) == "canceled"
    assert client.scripts.promote(2) == (0, None)


# -------------------------------------------------------------------- reap


def test_reap_requeues_a_run_whose_lease_expired(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    client.scripts.claim(("q",), 100, new_token())
    assert client.scripts.reap(100) == (0, [])  # lease still live: untouched
    assert status_of(raw, client, rid) == "running"
    wait_until(lambda: not raw.exists(k.run_lease(rid)), 5, message="lease expiry")
    released, requeued = client.scripts.reap(100)
    assert (released, requeued) == (0, [rid])
    assert status_of(raw, client, rid) == "queued"
    assert raw.lrange(k.q_ready("q"), 0, -1) == [rid.encode()]
    assert not raw.exists(k.q_processing("q"))
    assert not raw.exists(k.wf_running("wf"))
    assert raw.hget(k.run(rid), "attempt") == b"1"
    _, again = client.scripts.claim(("q",), 5_000, new_token())
    assert again is not None and again.id == rid


def test_reap_drops_processing_entries_of_finished_runs(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 5_000, tok)
    client.scripts.finalize(rid, tok, "succeeded", b"1")
    raw.lpush(k.q_processing("q"), rid)  # a leftover entry
    assert client.scripts.reap(100) == (0, [])
    assert not raw.exists(k.q_processing("q"))
    assert status_of(raw, client, rid) == "succeeded"


def test_reap_releases_parked_runs_when_slots_are_free(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    first = enq(max_concurrency=1)
    parked = enq(max_concurrency=1)
    client.scripts.claim(("q",), 5_000, new_token())
    client.scripts.claim(("q",), 5_000, new_token())
    assert raw.lrange(k.wf_waiting("wf"), 0, -1) == [parked.encode()]
    assert client.scripts.reap(100) == (0, [])  # no free slot: stays parked
    # a raised limit (synced metadata) frees a slot
    raw.hset(k.workflow("wf"), "maxConcurrency", 2)
    assert client.scripts.reap(100) == (1, [])
    assert raw.lrange(k.q_ready("q"), 0, -1) == [parked.encode()]
    assert not raw.exists(k.parked)
    assert status_of(raw, client, first) == "running"


def test_reap_of_a_cancel_requested_run_ends_it_canceled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    client.scripts.claim(("q",), 100, new_token())
    assert client.scripts.cancel(rid, "bye") == "running"
    wait_until(lambda: not raw.exists(k.run_lease(rid)), 5, message="lease expiry")
    assert client.scripts.reap(100) == (0, [rid])
    assert status_of(raw, client, rid) == "canceled"
    assert not raw.exists(k.q_ready("q"))
    assert not raw.exists(k.wf_running("wf"))


# ------------------------------------------------------------------ requeue_claimed


def test_requeue_claimed_puts_back_only_the_run_with_that_token(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    raw.sadd(k.queues, "q")
    mine, other = enq(workflow="a"), enq(workflow="b")
    lost = new_token()
    _, c1 = client.scripts.claim(("q",), 30_000, lost)
    _, c2 = client.scripts.claim(("q",), 30_000, new_token())
    assert c1 is not None and c1.id == mine and c2 is not None and c2.id == other
    assert client.scripts.requeue_claimed(lost, "worker killed by SIGKILL") == [(mine, "queued")]
    assert status_of(raw, client, mine) == "queued"
    assert raw.hget(k.run(mine), "lastCrash") == b"worker killed by SIGKILL"
    assert raw.hget(k.run(mine), "crashCount") in (None, b"0")  # it never started
    assert raw.lrange(k.q_ready("q"), 0, -1) == [mine.encode()]
    assert not raw.exists(k.run_lease(mine))
    assert status_of(raw, client, other) == "running"  # another worker's run is untouched
    assert raw.lrange(k.q_processing("q"), 0, -1) == [other.encode()]
    # a token nobody holds any more finds nothing, and a second call is a no-op
    assert client.scripts.requeue_claimed(lost, "again") == []


def test_requeue_claimed_ends_a_cancel_requested_run_instead(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    raw.sadd(client.keys.queues, "q")
    rid = enq()
    lost = new_token()
    client.scripts.claim(("q",), 30_000, lost)
    assert client.scripts.cancel(rid, "stop it") == "running"  # only requested
    assert client.scripts.requeue_claimed(lost, "worker killed by SIGKILL") == [(rid, "canceled")]
    assert status_of(raw, client, rid) == "canceled"
    assert not raw.exists(client.keys.q_ready("q"))
