"""renew_lease.lua, write_step.lua, finalize_run.lua: every write on behalf of a
run checks the lease token inside Lua; a stale token changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import redis

from redflow_mp import Client, codec
from redflow_mp.codec import StoredStep
from redflow_mp.ids import new_token
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(30)

_ERR = msgspec.json.encode({"type": "ValueError", "message": "boom", "retryable": True})


def _claimed(client: Client, enq: Callable[..., str], **kw: object) -> tuple[str, str]:
    rid = enq(**kw)
    tok = new_token()
    _, got = client.scripts.claim(("q",), 2_000, tok)
    assert got is not None and got.id == rid
    return rid, tok


def _snapshot(raw: redis.Redis, client: Client, rid: str) -> dict[str, object]:
    k = client.keys
    return {
        "run": raw.hgetall(k.run(rid)),
        "steps": raw.hgetall(k.run_steps(rid)),
        "lease": raw.zscore(k.leases, rid),
        "ready": raw.zrange(k.q_ready("q"), 0, -1),
        "scheduled": raw.zrange(k.q_scheduled("q"), 0, -1),
        "running": raw.smembers(k.wf_running("wf")),
        "status_running": raw.zrange(k.runs_status("running"), 0, -1),
    }


def _lease_left(client: Client, rid: str) -> float:
    """Milliseconds until the run's lease expires (negative once past)."""
    expiry = client.redis.zscore(client.keys.leases, rid)
    assert expiry is not None
    return expiry - client.server_time_ms()


def test_renew_extends_only_a_held_lease(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq)
    assert client.scripts.renew(60_000, [(rid, tok)]) == [(True, False)]
    assert _lease_left(client, rid) > 50_000
    raw.hset(k.run(rid), "lease", "thief")
    raw.zadd(k.leases, {rid: client.server_time_ms() + 2_000})
    assert client.scripts.renew(60_000, [(rid, tok)]) == [(False, False)]
    assert raw.hget(k.run(rid), "lease") == b"thief"
    assert _lease_left(client, rid) <= 2_000  # not extended for the thief either
    raw.hset(k.run(rid), "lease", tok)
    raw.zadd(k.leases, {rid: client.server_time_ms() - 1})  # expired, not yet reaped
    # Nobody acted on the expiry (e.g. a Redis stall kept the holder from renewing):
    # the holder's renewal takes it back.
    assert client.scripts.renew(60_000, [(rid, tok)]) == [(True, False)]
    assert _lease_left(client, rid) > 50_000
    raw.zadd(k.leases, {rid: client.server_time_ms() - 1})
    assert client.scripts.reap(10)[1] == [rid]  # the reaper acted: the run is back
    assert client.scripts.renew(60_000, [(rid, tok)]) == [(False, False)]
    assert raw.zscore(k.leases, rid) is None  # never re-added
    assert raw.hget(k.run(rid), "status") == b"queued"


def test_renew_reports_cancellation_per_pair(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    a, ta = _claimed(client, enq, workflow="wa")
    b, tb = _claimed(client, enq, workflow="wb")
    assert client.cancel_run(b, "stop") is True
    assert client.scripts.renew(5_000, [(a, ta), (b, tb), ("ghost", "t")]) == [
        (True, False),
        (True, True),
        (False, False),
    ]
    assert client.scripts.renew(5_000, []) == []


def test_write_step_is_fenced(raw: redis.Redis, client: Client, enq: Callable[..., str]) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq)
    assert client.scripts.write_step(rid, tok, "s1", b'{"status":"succeeded"}', 30_000) == (
        True,
        False,
    )
    assert raw.hget(k.run_steps(rid), "s1") == b'{"status":"succeeded"}'
    assert _lease_left(client, rid) > 20_000  # a step write also extends the lease
    raw.hset(k.run(rid), "lease", "thief")
    assert client.scripts.write_step(rid, tok, "s2", b"{}", 30_000) == (False, False)
    assert client.scripts.write_step(rid, tok, "s1", b'{"status":"failed"}', 30_000) == (
        False,
        False,
    )
    assert raw.hgetall(k.run_steps(rid)) == {b"s1": b'{"status":"succeeded"}'}
    assert raw.hget(k.run(rid), "lease") == b"thief"
    # an expired lease nobody acted on still takes the holder's write (and is
    # extended by it); once the reaper put the run back, the write is refused
    raw.hset(k.run(rid), "lease", tok)
    raw.zadd(k.leases, {rid: client.server_time_ms() - 1})
    assert client.scripts.write_step(rid, tok, "s2", b"{}", 30_000) == (True, False)
    assert _lease_left(client, rid) > 20_000
    raw.zadd(k.leases, {rid: client.server_time_ms() - 1})
    assert client.scripts.reap(10)[1] == [rid]
    assert client.scripts.write_step(rid, tok, "s3", b"{}", 30_000) == (False, False)
    assert raw.hexists(k.run_steps(rid), "s3") is False


def test_write_step_reports_cancellation(client: Client, enq: Callable[..., str]) -> None:
    rid, tok = _claimed(client, enq)
    client.cancel_run(rid)
    assert client.scripts.write_step(rid, tok, "s", b"{}", 5_000) == (True, True)


def test_write_step_with_empty_token_never_matches_a_missing_lease(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid, _tok = _claimed(client, enq)
    raw.hdel(client.keys.run(rid), "lease")
    raw.zrem(client.keys.leases, rid)
    assert client.scripts.write_step(rid, "", "s", b"{}", 5_000) == (False, False)
    assert not raw.exists(client.keys.run_steps(rid))


@pytest.mark.parametrize(
    ("mode", "payload", "extra"),
    [
        ("succeeded", b'{"v":1}', 0),
        ("failed", _ERR, 0),
        ("canceled", b"", 0),
        ("retry", _ERR, 0),
        ("retry", _ERR, 50),
        ("requeue", b"stopping", 0),
        ("crash", b"SIGKILL", 3),
    ],
)
def test_finalize_with_a_stale_token_changes_nothing(
    raw: redis.Redis,
    client: Client,
    enq: Callable[..., str],
    mode: str,
    payload: bytes,
    extra: int,
) -> None:
    rid, tok = _claimed(client, enq, max_attempts=3)
    raw.hset(client.keys.run(rid), "lease", "thief")
    before = _snapshot(raw, client, rid)
    assert client.scripts.finalize(rid, tok, mode, payload, extra) is None
    assert _snapshot(raw, client, rid) == before
    assert status_of(raw, client, rid) == "running"


def test_finalize_succeeded_cleans_up_and_publishes(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq)
    pubsub = raw.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
    try:
        pubsub.subscribe(k.run_done(rid))
        first = pubsub.get_message(timeout=2)
        assert first is not None and first["type"] == "subscribe"
        assert client.scripts.finalize(rid, tok, "succeeded", b'{"v":1}') == "succeeded"
        msg = pubsub.get_message(timeout=2)
        # the status only: a wake-up, the waiter reads the run (test_forged_results)
        assert msg is not None and msg["data"] == b"succeeded"
    finally:
        pubsub.close()
    h = raw.hgetall(k.run(rid))
    assert h[b"status"] == b"succeeded"
    assert h[b"outputJson"] == b'{"v":1}'
    assert int(h[b"finishedAt"]) >= int(h[b"startedAt"])
    assert h[b"doneToken"] == tok.encode()
    assert not raw.exists(k.leases)
    assert not raw.exists(k.wf_running("wf"))
    assert raw.zscore(k.runs_status("succeeded"), rid) == int(h[b"finishedAt"])
    assert raw.zscore(k.runs_status("running"), rid) is None
    # a second finish changes nothing: the holder learns what was applied
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "succeeded"
    assert raw.hgetall(k.run(rid)) == h
    assert client.scripts.finalize(rid, new_token(), "failed", _ERR) is None


def test_finalize_failed_stores_the_error(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid, tok = _claimed(client, enq)
    assert client.scripts.finalize(rid, tok, "failed", _ERR) == "failed"
    assert raw.hget(client.keys.run(rid), "errorJson") == _ERR
    assert raw.zscore(client.keys.runs_status("failed"), rid) is not None


def test_retry_without_delay_requeues_with_next_attempt(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq, max_attempts=3)
    assert client.scripts.finalize(rid, tok, "retry", _ERR, 0) == "queued"
    h = raw.hgetall(k.run(rid))
    assert (h[b"status"], h[b"attempt"], h[b"errorJson"]) == (b"queued", b"2", _ERR)
    assert raw.zrange(k.q_ready("q"), 0, -1) == [rid.encode()]
    assert not raw.exists(k.leases)
    assert not raw.exists(k.wf_running("wf"))
    _, again = client.scripts.claim(("q",), 2_000, new_token())
    assert again is not None and again.attempt == 2


def test_retry_with_delay_schedules(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq, max_attempts=3)
    before = client.server_time_ms()
    assert client.scripts.finalize(rid, tok, "retry", _ERR, 30_000) == "scheduled"
    due = raw.zscore(k.q_scheduled("q"), rid)
    assert due is not None and before + 30_000 <= due <= client.server_time_ms() + 30_000
    assert raw.hget(k.run(rid), "availableAt") == str(int(due)).encode()
    assert status_of(raw, client, rid) == "scheduled"
    assert not raw.exists(k.q_ready("q"))
    assert raw.zscore(k.due_queues, "q") == due


def test_retry_of_a_cancel_requested_run_ends_canceled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid, tok = _claimed(client, enq, max_attempts=3)
    client.cancel_run(rid, "enough")
    assert client.scripts.finalize(rid, tok, "retry", _ERR, 0) == "canceled"
    err = msgspec.json.decode(raw.hget(client.keys.run(rid), "errorJson") or b"{}")
    assert err["type"] == "RunCanceledError" and "enough" in err["message"]


def test_success_of_a_cancel_requested_run_ends_canceled_output_kept(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid, tok = _claimed(client, enq)
    client.cancel_run(rid)
    assert client.scripts.finalize(rid, tok, "succeeded", b'"late"') == "canceled"
    assert raw.hget(client.keys.run(rid), "outputJson") == b'"late"'


def test_requeue_puts_the_run_at_the_front(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid, tok = _claimed(client, enq)
    other = enq(workflow="other")
    assert client.scripts.finalize(rid, tok, "requeue", b"draining") == "queued"
    # back at its createdAt: ahead of a run enqueued after it
    assert raw.zrange(k.q_ready("q"), 0, -1) == [rid.encode(), other.encode()]
    assert raw.hget(k.run(rid), "attempt") == b"1"
    assert raw.hget(k.run(rid), "lastCrash") == b"draining"


def test_crash_counts_and_fails_at_the_cap(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    k = client.keys
    rid = enq()
    for n in (1, 2):
        tok = new_token()
        _, got = client.scripts.claim(("q",), 2_000, tok)
        assert got is not None
        assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "queued"
        assert raw.hget(k.run(rid), "crashCount") == str(n).encode()
    tok = new_token()
    client.scripts.claim(("q",), 2_000, tok)
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "failed"
    err = msgspec.json.decode(raw.hget(k.run(rid), "errorJson") or b"{}")
    assert err["type"] == "RunCrashedError" and err["retryable"] is False


def test_a_crash_sent_again_with_its_token_is_charged_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The supervisor resends a dead child's put-back after transient trouble
    (``supervisor/aftermath.py``): the first may have been applied (a lost reply),
    or the run claimed again since; neither resend charges a second crash."""
    k = client.keys
    rid = enq()
    tok = new_token()
    _, got = client.scripts.claim(("q",), 2_000, tok)
    assert got is not None
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "queued"
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "queued"
    assert raw.hget(k.run(rid), "crashCount") == b"1"
    again = new_token()
    _, got = client.scripts.claim(("q",), 2_000, again)
    assert got is not None
    before = _snapshot(raw, client, rid)
    # its status now (the resend of an applied finish), nothing changed
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "running"
    assert _snapshot(raw, client, rid) == before
    assert raw.hget(k.run(rid), "crashCount") == b"1"


def _step(status: str) -> bytes:
    return codec.encode_step(
        StoredStep(seq=0, status=status, started_at=1, finished_at=2, attempt=1, output_json="1")
    )


def test_a_step_that_succeeds_clears_the_crash_count(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """max_run_crashes counts the crashes since the run last completed a step: a
    long run killed once per stage (an OOM kill in each of its hours-long steps)
    failed as RunCrashedError at its third kill, progress in between or not. A
    step record that is no progress (running; failed, which a replay runs again)
    keeps the count, so a run that kills its worker before any new step succeeds
    still fails at the cap."""
    k = client.keys
    rid = enq()

    def crash() -> str | None:
        tok = new_token()
        _, got = client.scripts.claim(("q",), 2_000, tok)
        assert got is not None and got.id == rid
        for status in ("running", "failed"):  # no progress: the count stays
            assert client.scripts.write_step(rid, tok, "s", _step(status), 2_000)[0]
        return client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3)

    assert [crash(), crash()] == ["queued", "queued"]
    assert raw.hget(k.run(rid), "crashCount") == b"2"
    tok = new_token()
    client.scripts.claim(("q",), 2_000, tok)
    # a step that succeeds before the execution replayed the steps recorded
    # before it (Execution.made_progress: its name changes at each execution)
    assert client.scripts.write_step(rid, tok, "done-0", _step("succeeded"), 2_000)[0]
    assert raw.hget(k.run(rid), "crashCount") == b"2"
    assert client.scripts.write_step(rid, tok, "done-1", _step("succeeded"), 2_000, progress=True)[
        0
    ]
    assert raw.hget(k.run(rid), "crashCount") is None
    assert raw.hget(k.run(rid), "lastCrash") == b"SIGKILL"  # the last crash's cause stays
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "queued"
    assert raw.hget(k.run(rid), "crashCount") == b"1"
    # a run in an event wait: the consumed event is the step's success
    tok = new_token()
    client.scripts.claim(("q",), 2_000, tok)
    assert client.send_event(rid, "go", 1)
    head = _step("succeeded").split(b',"outputJson"')[0] + b',"outputJson":'
    assert client.send_event(rid, "go", 2)
    code, _, _ = client.scripts.consume_event(rid, tok, "ev-0", "go", (head, b"}"), 2_000)
    assert code == 1 and raw.hget(k.run(rid), "crashCount") == b"1"  # no progress
    code, _, _ = client.scripts.consume_event(
        rid, tok, "ev", "go", (head, b"}"), 2_000, progress=True
    )
    assert code == 1 and raw.hget(k.run(rid), "crashCount") is None
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 3) == "queued"
    # no step succeeds any more: the cap is reached as before
    assert [crash(), crash()] == ["queued", "failed"]
    err = msgspec.json.decode(raw.hget(k.run(rid), "errorJson") or b"{}")
    assert err["type"] == "RunCrashedError" and "3 times" in err["message"]


# ------------------------------------------------- resent finish (issue 10 #4)


@pytest.mark.parametrize(
    ("mode", "payload", "status"),
    [("failed", _ERR, "failed"), ("succeeded", b'"ok"', "succeeded"), ("retry", _ERR, "queued")],
)
def test_a_resent_finalize_reports_the_status_it_applied(
    raw: redis.Redis,
    client: Client,
    enq: Callable[..., str],
    mode: str,
    payload: bytes,
    status: str,
) -> None:
    """The reply of a finalize was lost and the caller sends it again with the
    same token: it learns the outcome instead of 'lease lost'."""
    rid, tok = _claimed(client, enq, max_attempts=2)
    assert client.scripts.finalize(rid, tok, mode, payload) == status
    after = _snapshot(raw, client, rid)
    assert client.scripts.finalize(rid, tok, mode, payload) == status
    assert _snapshot(raw, client, rid) == after  # and applies nothing twice
    assert client.scripts.finalize(rid, new_token(), mode, payload) is None


def test_a_resent_finish_in_claim_reports_the_status_it_applied(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    rid, tok = _claimed(client, enq)
    finish = ("failed", rid, tok, _ERR, 0)
    assert client.scripts.claim(("q",), 2_000, "", finish) == ("failed", None)
    assert client.scripts.claim(("q",), 2_000, "", finish) == ("failed", None)
    other = ("failed", rid, new_token(), _ERR, 0)
    assert client.scripts.claim(("q",), 2_000, "", other) == ("lease-lost", None)


def test_a_resent_crash_at_the_cap_reports_failed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The arbiter's crash finish can fail the run (poison pill) and then calls
    on_failure: its resend after a lost reply must learn `failed` too."""
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 2_000, tok)
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 1) == "failed"
    assert client.scripts.finalize(rid, tok, "crash", b"SIGKILL", 1) == "failed"
    assert raw.hget(client.keys.run(rid), "crashCount") == b"1"


def test_the_reaper_never_answers_for_the_lost_holder(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A holder cut off past its lease: the reaper put the run back (storing no
    token), so the holder's late finish is refused, not reported as applied."""
    rid = enq()
    tok = new_token()
    client.scripts.claim(("q",), 2_000, tok)
    raw.zadd(client.keys.leases, {rid: 1})  # expired
    assert client.scripts.reap(10)[1] == [rid]
    assert client.scripts.finalize(rid, tok, "succeeded", b"1") is None
    assert client.scripts.claim(("q",), 2_000, "", ("succeeded", rid, tok, b"1", 0)) == (
        "lease-lost",
        None,
    )
    assert status_of(raw, client, rid) == "queued"


def test_a_renewal_is_not_refused_while_redis_is_out_of_memory(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A lease renewal changes the score of a member that exists (no memory to
    speak of): refused under OOM like any write, every lease lapsed during an
    OOM longer than a lease, and once memory came back the reaper could put back
    (and another worker execute again) a run whose worker was alive and riding
    the trouble out (its finish refused too). Redis >= 7 runs it flagged
    ``allow-oom``; on 6.2 a script's first write is refused under OOM (no flag)."""
    if int(str(raw.info("server")["redis_version"]).split(".")[0]) < 7:
        pytest.skip("Redis 6.2 has no script flags")
    rid, tok = _claimed(client, enq)
    raw.config_set("maxmemory", 1)
    try:
        # before: RedisOutOfMemoryError: ... renew lease was refused
        assert client.scripts.renew(60_000, [(rid, tok)]) == [(True, False)]
        assert _lease_left(client, rid) > 50_000
    finally:
        raw.config_set("maxmemory", 0)
