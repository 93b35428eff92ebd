"""Shared keys of the prefix overwritten with another type of value (an
operator's typo, or another program writing into our prefix), one transition at
a time. Redis rolls back nothing of a script that fails half-way, so a refused
write in the middle of a transition used to leave a run half-moved: popped from
its ready set but in no other set, marked running with no index, scheduled in
no scheduled set. Now an index that only lists runs is skipped when refused (the
transition goes on), and a set that places a run is written first: refused, the
run stays where it was and the error names the key."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.claimed import Finish
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_run_id, new_token
from tests.helpers import status_of, texts, wait_until

pytestmark = pytest.mark.timeout(30)

_JUNK = "not a redflow key"


def _placed(raw: redis.Redis, client: Client, rid: str, q: str = "q", wf: str = "wf") -> list[str]:
    """The sets that place run ``rid`` (a run is in exactly the one its status needs)."""
    k = client.keys
    out = []
    for name, key in (
        ("ready", k.q_ready(q)),
        ("scheduled", k.q_scheduled(q)),
        ("waiting", k.wf_waiting(wf)),
        ("leases", k.leases),
    ):
        if raw.type(key) == b"zset" and raw.zscore(key, rid) is not None:
            out.append(name)
    return out


def _where(raw: redis.Redis, client: Client, rid: str) -> tuple[str | None, list[str]]:
    return status_of(raw, client, rid), _placed(raw, client, rid)


def _claim(client: Client, finish: Finish | None = None, token: str | None = None) -> object:
    return client.scripts.claim(("q",), 5_000, new_token() if token is None else token, finish)


def _index_keys(client: Client) -> list[str]:
    k = client.keys
    return [
        k.runs_created,
        k.workflow_runs("wf"),
        k.runs_status("queued"),
        k.runs_status("running"),
        k.runs_status("succeeded"),
        k.queues,
        k.parked,
    ]


@pytest.mark.parametrize("which", range(7))
def test_an_index_of_the_wrong_type_stops_no_enqueue_claim_or_finish(
    raw: redis.Redis, client: Client, enq: Callable[..., str], which: int
) -> None:
    """A listing index (runs:created, workflow-runs, a status index, queues,
    parked) of the wrong type: enqueue raised after it had written the run (a
    caller's retry made a second one), a claim failed after it had marked the
    run running (no worker ran it; the reaper put it back, and again), a finish
    failed half-way. The index is skipped; the run goes its way."""
    bad = _index_keys(client)[which]
    raw.set(bad, _JUNK)
    rid = enq()
    assert _where(raw, client, rid) == ("queued", ["ready"])
    token = new_token()
    _, claimed = client.scripts.claim(("q",), 5_000, token)
    assert claimed is not None and claimed.id == rid
    assert _where(raw, client, rid) == ("running", ["leases"])
    done, _ = client.scripts.claim(("q",), 5_000, "", Finish("succeeded", rid, token, b"1"))
    assert done == "succeeded"
    assert _where(raw, client, rid) == ("succeeded", [])
    assert raw.get(bad) == _JUNK.encode()  # never overwritten


def test_a_runs_attempts_list_and_idempotency_key_of_the_wrong_type_stop_no_finish(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """``run:<id>:attempts`` and the run's idempotency key overwritten: the finish
    failed after its status was written (the worker resent it forever)."""
    k = client.keys
    rid = enq(key="order-1")
    token = new_token()
    _claim(client, token=token)
    raw.set(k.run_attempts(rid), _JUNK)
    raw.delete(k.idempotency("wf", "order-1"))
    raw.hset(k.idempotency("wf", "order-1"), "x", "y")
    done, _ = client.scripts.claim(("q",), 5_000, "", Finish("failed", rid, token, b'{"m":1}'))
    assert done == "failed"
    assert _where(raw, client, rid) == ("failed", [])
    assert raw.scard(k.wf_running("wf")) == 0


def test_a_workflow_hash_of_the_wrong_type_strands_no_claimed_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """``workflow:<wf>`` (read for the concurrency limit at every claim) a string:
    the claim popped the run, took its slot, then failed: queued in no set, its
    slot in wf-running held for ever. It goes back to its ready set (a minute
    later) and the error names the key."""
    bad = client.keys.workflow("wf")
    raw.set(bad, _JUNK)
    rid = enq()
    with pytest.raises(WrongTypeError, match=bad):
        _claim(client)
    assert _where(raw, client, rid) == ("queued", ["ready"])
    assert raw.scard(client.keys.wf_running("wf")) == 0


def test_a_waiting_set_of_the_wrong_type_strands_no_parked_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A run over max_concurrency is parked in ``wf-waiting:<wf>``; that set a
    string: the run was popped and given back its slot, then the park failed."""
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 1})
    enq()
    second = enq()
    _claim(client)
    raw.set(k.wf_waiting("wf"), _JUNK)
    with pytest.raises(WrongTypeError, match=k.wf_waiting("wf")):
        _claim(client)
    assert _where(raw, client, second) == ("queued", ["ready"])
    assert raw.scard(k.wf_running("wf")) == 1


@pytest.mark.parametrize("bad_key", ["rate", "rate-started", "scheduled", "due-queues"])
def test_a_rate_limit_key_of_the_wrong_type_strands_no_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str], bad_key: str
) -> None:
    """The rate gate writes ``rate:<wf>`` and ``rate-started:<wf>`` and, for a
    run over the limit, the queue's scheduled set and due-queues; any of them a
    string: the run was popped (and marked scheduled) and the claim failed."""
    k = client.keys
    raw.hset(k.workflow("wf"), mapping={"name": "wf", "maxConcurrency": 100, "rateLimit": "1/h"})
    enq()
    second = enq()
    logs = ("rate", "rate-started")
    if bad_key not in logs:
        _claim(client)  # the first takes the hour's one start
    bad = {
        "rate": k.rate("wf"),
        "rate-started": k.rate_started("wf"),
        "scheduled": k.q_scheduled("q"),
        "due-queues": k.due_queues,
    }[bad_key]
    raw.delete(bad)
    raw.set(bad, _JUNK)
    with pytest.raises(WrongTypeError, match=bad):
        _claim(client)
    rid = second if bad_key not in logs else texts(raw.zrange(k.q_ready("q"), 0, 0))[0]
    assert _where(raw, client, rid) == ("queued", ["ready"])
    assert not raw.sismember(k.wf_running("wf"), rid)


def test_a_retry_with_a_scheduled_set_of_the_wrong_type_runs_again_instead(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A retry with backoff goes to the queue's scheduled set; that set a string:
    the run was marked scheduled (attempt 2) in no set, never to run again. It
    now goes to its ready set (its backoff not waited for)."""
    k = client.keys
    rid = enq(max_attempts=3)
    token = new_token()
    _claim(client, token=token)
    raw.set(k.q_scheduled("q"), _JUNK)
    done, _ = client.scripts.claim(
        ("q",), 5_000, "", Finish("retry", rid, token, b'{"m":1}', 30_000)
    )
    assert done == "queued"
    assert _where(raw, client, rid) == ("queued", ["ready"])
    assert raw.hget(k.run(rid), "attempt") == b"2"


def test_a_retry_into_a_ready_set_of_the_wrong_type_changes_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A retry without delay (or a requeue) goes to the ready set; that set a
    string: the run was marked queued in no set. The finish now fails whole,
    naming the key; the run stays running and leased (the worker resends)."""
    k = client.keys
    rid = enq(max_attempts=3)
    token = new_token()
    _claim(client, token=token)
    raw.set(k.q_ready("q"), _JUNK)
    with pytest.raises(WrongTypeError, match=k.q_ready("q")):
        client.scripts.claim(("q",), 5_000, "", Finish("retry", rid, token, b'{"m":1}', 0))
    assert _where(raw, client, rid) == ("running", ["leases"])
    assert raw.hget(k.run(rid), "attempt") == b"1"
    assert raw.llen(k.run_attempts(rid)) == 0
    raw.delete(k.q_ready("q"))
    done, _ = client.scripts.claim(("q",), 5_000, "", Finish("retry", rid, token, b'{"m":1}', 0))
    assert done == "queued" and _where(raw, client, rid) == ("queued", ["ready"])


def test_a_delayed_enqueue_with_due_queues_of_the_wrong_type_leaves_no_run(
    raw: redis.Redis, client: Client
) -> None:
    """``due-queues`` a string: a delayed enqueue wrote the run and its scheduled
    entry, then failed: the promoter never looked at the queue (the run never
    ran), and the caller's retry with the same key got the stranded run back."""
    k = client.keys
    raw.set(k.due_queues, _JUNK)
    rid = new_run_id()
    run_at = client.server_time_ms() + 60_000
    with pytest.raises(WrongTypeError, match=k.due_queues):
        client.scripts.enqueue(rid, "wf", "q", b"{}", 1, run_at, "k1", 60_000, "", "", None, None)
    assert not raw.exists(k.run(rid))
    assert not raw.exists(k.idempotency("wf", "k1"))
    assert raw.zcard(k.q_scheduled("q")) == 0


def test_the_promoter_goes_on_past_a_queue_whose_ready_set_is_of_the_wrong_type(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The promoter moved the due runs of each queue in due order; a queue whose
    ready set is a string failed the whole call after it had removed the run
    from its scheduled set and marked it queued (stranded), and every later
    call failed on it again: no delayed run of any queue was promoted any more."""
    k = client.keys
    now = client.server_time_ms()
    # Scheduled a minute ahead, then made due by hand (a run_at 50 ms ahead was
    # already past when the enqueue ran under load: the run went to the ready
    # set, and the test failed 5 in 5 at a load of 19).
    stuck = enq(queue="bad", run_at_ms=now + 60_000)
    fine = enq(queue="good", run_at_ms=now + 60_000)
    assert status_of(raw, client, stuck) == status_of(raw, client, fine) == "scheduled"
    raw.zadd(k.q_scheduled("bad"), {stuck: now - 2})
    raw.zadd(k.q_scheduled("good"), {fine: now - 1})
    raw.zadd(k.due_queues, {"bad": now - 2, "good": now - 1})
    raw.set(k.q_ready("bad"), _JUNK)
    promoted, _, _ = client.scripts.promote(100)
    assert promoted == 1
    assert status_of(raw, client, fine) == "queued"
    assert raw.zscore(k.q_ready("good"), fine) is not None
    assert status_of(raw, client, stuck) == "scheduled"
    assert raw.zscore(k.q_scheduled("bad"), stuck) is not None
    looked_again = raw.zscore(k.due_queues, "bad")
    assert looked_again is not None and looked_again > now + 30_000
    raw.delete(k.q_ready("bad"))
    raw.zadd(k.due_queues, {"bad": 0})
    assert client.scripts.promote(100)[0] == 1
    assert status_of(raw, client, stuck) == "queued"


def test_the_reaper_goes_on_past_a_run_whose_ready_set_is_of_the_wrong_type(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Expired leases are put back in one call; one run whose queue's ready set is
    a string failed the call (after it had marked the run queued and dropped its
    lease: stranded), and every later call failed on it first: no expired lease
    was put back any more."""
    k = client.keys
    stuck = enq(queue="bad", max_concurrency=10)
    fine = enq(queue="good", max_concurrency=10)
    client.scripts.claim(("bad",), 1, new_token())
    client.scripts.claim(("good",), 1, new_token())
    raw.set(k.q_ready("bad"), _JUNK)
    now = client.server_time_ms()
    while client.server_time_ms() < now + 5:
        pass
    _, requeued, _ = client.scripts.reap(100)
    assert requeued == [fine]
    assert status_of(raw, client, fine) == "queued"
    assert status_of(raw, client, stuck) == "running"
    expiry = raw.zscore(k.leases, stuck)
    assert expiry is not None and expiry > now + 30_000


@pytest.mark.parametrize("bad_key", ["failed", "created", "workflow-runs"])
def test_retention_goes_on_past_an_index_of_the_wrong_type(
    raw: redis.Redis, client: Client, enq: Callable[..., str], bad_key: str
) -> None:
    """Retention walks the finished status indexes and removes each run from
    every index; one of them a string failed every sweep (half-way through a
    run's removal): no finished run was removed any more, Redis grew for ever."""
    k = client.keys
    rid = enq()
    token = new_token()
    _claim(client, token=token)
    client.scripts.claim(("q",), 5_000, "", Finish("succeeded", rid, token, b"1"))
    bad = {
        "failed": k.runs_status("failed"),
        "created": k.runs_created,
        "workflow-runs": k.workflow_runs("wf"),
    }[bad_key]
    raw.delete(bad)
    raw.set(bad, _JUNK)
    now = client.server_time_ms()
    while client.server_time_ms() < now + 3:
        pass
    assert client.scripts.sweep(1, 100) == 1
    assert not raw.exists(k.run(rid))
    assert raw.zscore(k.runs_status("succeeded"), rid) is None


def test_a_sleep_with_timers_of_the_wrong_type_strands_no_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A durable sleep suspends the run and adds its wake-up to ``timers``; that
    key a string: the run was suspended (its lease dropped) and the wake-up
    refused, so it slept for ever. The suspend now fails whole, naming the key:
    the run stays running and leased (its worker tries again)."""
    from redflow_mp.codec import RunWait

    k = client.keys
    rid = enq()
    token = new_token()
    _claim(client, token=token)
    raw.set(k.timers, _JUNK)
    wait = RunWait(steps=["nap"], kinds=["sleep"], wake_at=client.server_time_ms() + 60_000)
    with pytest.raises(WrongTypeError, match=k.timers):
        client.scripts.suspend(rid, token, wait)
    assert _where(raw, client, rid) == ("running", ["leases"])
    raw.delete(k.timers)
    assert client.scripts.suspend(rid, token, wait) == "suspended"
    assert raw.zscore(k.timers, rid) is not None


def test_a_woken_run_whose_ready_set_is_of_the_wrong_type_stays_suspended(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """An event (or a finished child, or its timer) wakes a suspended run into its
    ready set; that set a string: the run was marked queued in no set. It now
    stays suspended and its timer tries again a minute later."""
    from redflow_mp.codec import RunWait

    k = client.keys
    rid = enq()
    token = new_token()
    _claim(client, token=token)
    wait = RunWait(steps=["e"], kinds=["event"], events=["go"])
    assert client.scripts.suspend(rid, token, wait) == "suspended"
    raw.set(k.q_ready("q"), _JUNK)
    client.send_event(rid, "go")
    assert status_of(raw, client, rid) == "suspended"
    later = raw.zscore(k.timers, rid)
    assert later is not None and later > client.server_time_ms() + 30_000


def test_a_cancel_with_a_scheduled_set_of_the_wrong_type_cancels_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Canceling a queued run removes it from its ready and scheduled sets; the
    scheduled set a string: the cancel failed after it had removed the ready
    entry (the run stayed queued in no set). It is canceled now."""
    k = client.keys
    rid = enq()
    raw.set(k.q_scheduled("q"), _JUNK)
    assert client.cancel_run(rid) is True
    assert _where(raw, client, rid) == ("canceled", [])


def test_a_steps_key_of_the_wrong_type_fails_its_run_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A run that executed before (a retry, a resume) has its steps read at its
    claim; ``run:<id>:steps`` a string: the claim failed after it had marked the
    run running and leased, with no worker: the reaper put it back after the
    lease and the next claim failed the same way, for ever. It now fails once,
    as a corrupted record naming the key."""
    k = client.keys
    rid = enq(max_attempts=3)
    token = new_token()
    _claim(client, token=token)
    client.scripts.claim(("q",), 5_000, "", Finish("retry", rid, token, b'{"m":1}', 0))
    raw.set(k.run_steps(rid), _JUNK)
    assert _claim(client) == ("", None)
    assert _where(raw, client, rid) == ("failed", [])
    error = raw.hget(k.run(rid), "errorJson")
    assert error is not None and k.run_steps(rid).encode() in error


def test_a_resume_into_a_ready_set_of_the_wrong_type_changes_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """resume_run sets a failed run queued, then adds it to its ready set; that
    set a string: the run was left queued in no set (and its failed steps
    dropped). The resume now fails whole, naming the key; the run stays failed."""
    k = client.keys
    rid = enq()
    token = new_token()
    _claim(client, token=token)
    client.scripts.claim(("q",), 5_000, "", Finish("failed", rid, token, b'{"m":1}'))
    raw.set(k.q_ready("q"), _JUNK)
    with pytest.raises(WrongTypeError, match=k.q_ready("q")):
        client.resume_run(rid)
    assert _where(raw, client, rid) == ("failed", [])
    raw.delete(k.q_ready("q"))
    client.resume_run(rid)
    assert _where(raw, client, rid) == ("queued", ["ready"])


@pytest.mark.parametrize("mode", ["succeeded", "retry"])
def test_out_of_memory_refuses_a_finish_whole_and_is_not_called_a_wrong_type(
    raw: redis.Redis, client: Client, enq: Callable[..., str], mode: str
) -> None:
    """A neighbour's CONFIG SET maxmemory (noeviction): Redis refuses a script's
    first write and allows the rest once one is made. A finish whose first write
    is a pcall (the attempts entry, a retry's placement) must still change
    nothing, and say OOM, not WRONGTYPE."""
    from redflow_mp.errors import RedisOutOfMemoryError

    k = client.keys
    rid = enq(max_attempts=3)
    token = new_token()
    _claim(client, token=token)
    before = raw.hgetall(k.run(rid))
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", 1)
    try:
        with pytest.raises(RedisOutOfMemoryError):
            client.scripts.claim(("q",), 5_000, "", Finish(mode, rid, token, b"1", 30_000))
    finally:
        raw.config_set("maxmemory", 0)
    assert raw.hgetall(k.run(rid)) == before
    assert _where(raw, client, rid) == ("running", ["leases"])
    assert raw.llen(k.run_attempts(rid)) == 0
    done, _ = client.scripts.claim(("q",), 5_000, "", Finish(mode, rid, token, b"1", 30_000))
    assert done == ("succeeded" if mode == "succeeded" else "scheduled")


def test_a_batch_with_an_idempotency_key_of_the_wrong_type_leaves_no_run(
    raw: redis.Redis, client: Client, registry: object
) -> None:
    """``run_many`` with idempotency keys writes each run of a chunk, then indexes
    them all; one key a hash (another program's): the call failed after the runs
    before it were written but indexed nowhere, and a retry with the same keys
    got those stranded runs back (never to run). Now the chunk's runs go and the
    error names the key."""
    from redflow_mp import Registry, define_workflow

    assert isinstance(registry, Registry)

    @define_workflow("batchwf", registry=registry, queue="bq")
    def batchwf(ctx: object) -> None:
        return None

    k = client.keys
    raw.hset(k.idempotency("batchwf", "b3"), "x", "y")
    keys = ["b1", "b2", "b3", "b4"]
    with pytest.raises(WrongTypeError, match="b3"):
        batchwf.run_many([None] * 4, idempotency_keys=keys, client=client)
    for key in ("b1", "b2"):
        assert not raw.exists(k.idempotency("batchwf", key))
    assert not raw.keys(k.run("*"))
    raw.delete(k.idempotency("batchwf", "b3"))
    handles = batchwf.run_many([None] * 4, idempotency_keys=keys, client=client)
    assert raw.zcard(k.q_ready("bq")) == 4 and len({h.id for h in handles}) == 4


def test_the_reaper_goes_on_past_a_parked_workflow_whose_waiting_set_is_of_the_wrong_type(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A workflow listed in `parked` (free slots) whose wf-waiting set is a string:
    release_parked skips it, but the reaper then read the set's size with a
    failing ZCARD, so every reap call failed after its requeues (the reply lost:
    the stall guard never saw a call succeed, held off for good, and no expired
    lease of any queue was put back any more)."""
    k = client.keys
    rid = enq(queue="q", max_concurrency=10)
    client.scripts.claim(("q",), 1, new_token())
    raw.sadd(k.parked, "other")
    raw.set(k.wf_waiting("other"), _JUNK)
    now = client.server_time_ms()
    while client.server_time_ms() < now + 5:
        pass
    _, requeued, _ = client.scripts.reap(100)
    assert requeued == [rid]
    assert status_of(raw, client, rid) == "queued"


def test_a_run_finished_while_its_status_index_was_broken_is_still_swept(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A finish while runs:status:succeeded held a neighbour's value left the run
    in no finished-status index: retention never found it, even once the key was
    gone. Such a finish now lists it in runs:unindexed, which the sweep reads too
    (a run listed there that is not finished is only dropped from it)."""
    k = client.keys
    rid = enq()
    token = new_token()
    raw.set(k.runs_status("succeeded"), _JUNK)
    _claim(client, token=token)
    client.scripts.claim(("q",), 5_000, "", Finish("succeeded", rid, token, b"1"))
    assert status_of(raw, client, rid) == "succeeded"
    raw.delete(k.runs_status("succeeded"))  # the neighbour's key is gone
    queued = enq()
    raw.zadd(k.runs_unindexed, {queued: 1})
    now = client.server_time_ms()
    wait_until(lambda: client.server_time_ms() > now + 2, 5, message="the retention's 1 ms")
    assert client.scripts.sweep(1, 100) == 1, "the run finished meanwhile was not swept"
    assert not raw.exists(k.run(rid), k.run_steps(rid), k.run_attempts(rid))
    assert raw.zscore(k.runs_created, rid) is None
    assert not raw.exists(k.runs_unindexed)
    assert status_of(raw, client, queued) == "queued"


def test_a_resumed_run_leaves_the_unindexed_list(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A run that failed while runs:status:failed was broken is listed in
    runs:unindexed; resumed, it is not finished any more and leaves it."""
    k = client.keys
    rid = enq()
    token = new_token()
    raw.set(k.runs_status("failed"), _JUNK)
    _claim(client, token=token)
    err = b'{"type":"E","message":"m","retryable":false}'
    client.scripts.claim(("q",), 5_000, "", Finish("failed", rid, token, err))
    assert raw.zscore(k.runs_unindexed, rid) is not None
    client.resume_run(rid)
    assert status_of(raw, client, rid) == "queued"
    assert raw.zscore(k.runs_unindexed, rid) is None
