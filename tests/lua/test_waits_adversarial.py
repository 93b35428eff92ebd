"""Durable waits against a neighbour sharing the Redis (keys of a run's waits
overwritten with another type of value) and at the sizes users reach (many
parents awaiting one child): no half-applied event, no lost wake-up, no script
that holds Redis for long."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait, encode_wait
from redflow_mp.errors import WrongTypeError
from redflow_mp.ids import new_token
from redflow_mp.lostkeys import repair_suspended
from redflow_mp.scripts import Claimed
from tests.helpers import (
    claim_one,
    command_counts,
    cpu_ms_of,
    decode_cpu_ms,
    server_cpu_ms,
    status_of,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

_JUNK = "not a redflow key"


def _suspend_on_children(client: Client, run: Claimed, children: list[str]) -> None:
    wait = RunWait(steps=["s"], kinds=["children"], children=children)
    assert client.scripts.suspend(run.id, run.token, wait) == "suspended"


def test_an_event_names_set_of_the_wrong_type_stores_nothing_and_names_the_key(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="e", queue="q")
    run = claim_one(client, "q")
    wait = RunWait(steps=["a"], kinds=["event"], events=["go"])
    assert client.scripts.suspend(run_id, run.token, wait) == "suspended"
    names = client.keys.run_event_names(run_id)
    raw.set(names, _JUNK)
    for _ in range(2):  # the sender sees an error and sends again
        with pytest.raises(WrongTypeError, match=re.escape(names)):
            client.scripts.send_event(run_id, "go", b'"p"', 10)
    # Before: each refused send had stored the event and counted it (2 and 2),
    # and the run waiting for it stayed suspended.
    assert raw.llen(client.keys.run_events(run_id, "go")) == 0
    assert raw.hget(client.keys.run(run_id), "eventsPending") in (None, b"0")
    # the key removed, the next send is stored once and wakes the run
    raw.delete(names)
    assert client.scripts.send_event(run_id, "go", b'"p"', 10) is True
    assert status_of(raw, client, run_id) == "queued"
    assert raw.llen(client.keys.run_events(run_id, "go")) == 1


def test_an_event_list_of_the_wrong_type_stores_nothing_and_names_the_key(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="e", queue="q")
    events = client.keys.run_events(run_id, "go")
    raw.set(events, _JUNK)
    with pytest.raises(WrongTypeError, match="holds another type"):
        client.scripts.send_event(run_id, "go", b'"p"', 10)
    assert raw.hget(client.keys.run(run_id), "eventsPending") in (None, b"0")
    assert raw.get(events) == _JUNK.encode()


def test_an_events_pending_field_that_is_not_a_number_loses_no_event(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="e", queue="q")
    raw.hset(client.keys.run(run_id), "eventsPending", "x")
    # Before: HINCRBY failed after the RPUSH: the event stored, an error raised.
    assert client.scripts.send_event(run_id, "go", b'"p"', 10) is True
    run = claim_one(client, "q")
    raw.hset(client.keys.run(run_id), "eventsPending", "y")
    head = b'{"seq":0,"status":"succeeded","startedAt":1,"finishedAt":2,"attempt":1,"outputJson":'
    # Before: HINCRBY failed after the LPOP: the event was popped and lost.
    code, payload, _ = client.scripts.consume_event(
        run_id, run.token, "a", "go", (head, b"}"), 5000
    )
    assert (code, payload) == (1, b'"p"')
    assert raw.hget(client.keys.run(run_id), "eventsPending") == b"0"


def test_a_waiters_set_overwritten_after_the_suspend_still_wakes_the_parent(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = claim_one(client, "pq")
    child_id = enq(workflow="c", queue="cq", parent=parent_id)
    _suspend_on_children(client, parent, [child_id])
    raw.delete(client.keys.run_waiters(child_id))
    raw.set(client.keys.run_waiters(child_id), _JUNK)
    child = claim_one(client, "cq")
    assert client.scripts.finalize(child.id, child.token, "succeeded", b'"ok"') == "succeeded"
    # Before: 'suspended' with no timer: the parent waited forever.
    assert status_of(raw, client, parent_id) == "queued"
    assert raw.zscore(client.keys.q_ready("pq"), parent_id) is not None


def test_a_parent_awaiting_a_child_redis_lost_is_woken_by_the_sweep(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # The child's hash evicted (allkeys-lru) or deleted: it never finishes, so
    # nothing woke its parent (suspended for good).
    kept_parent_id = enq(workflow="p1", queue="pq")
    kept_parent = claim_one(client, "pq")
    lost_parent_id = enq(workflow="p2", queue="pq")
    lost_parent = claim_one(client, "pq")
    kept = enq(workflow="c", queue="cq", parent=kept_parent_id)
    lost = enq(workflow="c", queue="cq", parent=lost_parent_id)
    live = [enq(workflow="c", queue="cq", parent=lost_parent_id) for _ in range(2)]
    _suspend_on_children(client, kept_parent, [kept])
    _suspend_on_children(client, lost_parent, [lost, *live])
    raw.delete(client.keys.run(lost))
    # one page of one run: the first suspended (its child is there), then the next
    assert repair_suspended(client, client, 0, page=1) == (1, [], [])
    assert repair_suspended(client, client, 1, page=1) == (2, [(lost_parent_id, "")], [])
    assert status_of(raw, client, lost_parent_id) == "queued"  # woken: it reads its children
    assert status_of(raw, client, kept_parent_id) == "suspended"
    assert repair_suspended(client, client, 0) == (0, [], [])  # nothing more


def test_the_sweep_wakes_a_parent_whose_awaited_set_redis_lost(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # run:<id>:awaits evicted: each child's finish found nothing to remove from
    # it, so none woke the parent, though all of them finished.
    parent_id = enq(workflow="p", queue="pq")
    parent = claim_one(client, "pq")
    kids = [enq(workflow="c", queue="cq", parent=parent_id) for _ in range(2)]
    _suspend_on_children(client, parent, kids)
    raw.delete(client.keys.run_awaits(parent_id))
    for _ in kids:
        child = claim_one(client, "cq")
        assert client.scripts.finalize(child.id, child.token, "succeeded", b'"ok"') == "succeeded"
    assert status_of(raw, client, parent_id) == "suspended"  # before: for good
    assert client.scripts.recheck_waits([parent_id]) == ([], [parent_id])
    assert status_of(raw, client, parent_id) == "queued"


def test_the_sweep_reads_a_bounded_window_of_a_fan_out(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # 60 children, 59 finished and the awaits set lost: past 50 children only a
    # window is read, so "all finished" is never concluded from part of them,
    # and a page of such parents costs at most 5,000 reads.
    parent_id = enq(workflow="p", queue="pq")
    parent = claim_one(client, "pq")
    kids = [enq(workflow="c", queue="cq", parent=parent_id) for _ in range(60)]
    _suspend_on_children(client, parent, kids)
    raw.delete(client.keys.run_awaits(parent_id))
    for _ in kids[:-1]:
        child = claim_one(client, "cq")
        assert client.scripts.finalize(child.id, child.token, "succeeded", b"1") == "succeeded"
    counts = command_counts(raw, lambda: client.scripts.recheck_waits([parent_id]))
    assert counts.get("hget", 0) == 50  # the window, not the 60
    assert status_of(raw, client, parent_id) == "suspended"


def test_the_sweep_puts_back_wake_up_times_redis_lost(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    # `timers` evicted (allkeys-lru) or deleted: every sleeping run slept for good.
    sleeper_id = enq(workflow="s", queue="sq")
    sleeper = claim_one(client, "sq")
    listener_id = enq(workflow="e", queue="eq")
    listener = claim_one(client, "eq")
    at = client.server_time_ms() - 1  # due already
    sleep = RunWait(steps=["nap"], kinds=["sleep"], wake_at=at + 60_000)
    assert client.scripts.suspend(sleeper_id, sleeper.token, sleep) == "suspended"
    events = RunWait(steps=["a"], kinds=["event"], events=["go"])  # no deadline: no timer
    assert client.scripts.suspend(listener_id, listener.token, events) == "suspended"
    raw.delete(client.keys.timers)
    assert repair_suspended(client, client, 0) == (0, [], [sleeper_id])
    assert raw.zrange(client.keys.timers, 0, -1, withscores=True) == [
        (sleeper_id.encode(), float(at + 60_000))
    ]
    assert repair_suspended(client, client, 0) == (0, [], [])  # there now: left alone
    assert client.scripts.recheck_waits([listener_id, "GONE-RUN"]) == ([], [])


def test_a_child_awaited_by_many_parents_wakes_them_in_bounded_slices(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """5,000 parents awaiting one shared child (``run_workflow`` with a shared
    ``idempotency_key``): its finish wakes a slice of them, the timer waker the
    rest in bounded calls; none is lost or woken twice."""
    n = 5_000
    child_id = enq(workflow="c", queue="cq")
    parents = [enq(workflow="p", queue="pq", max_concurrency=n) for _ in range(n)]
    pipe_client = client.scripts
    for _ in range(n):
        run = claim_one(client, "pq")
        wait = RunWait(steps=["s"], kinds=["children"], children=[child_id])
        assert pipe_client.suspend(run.id, run.token, wait) == "suspended"
    child = claim_one(client, "cq")
    assert client.scripts.finalize(child.id, child.token, "succeeded", b'"ok"') == "succeeded"
    # Before: the finish woke all 5,000 in one script (~90 ms of Redis; 100,000: ~2 s).
    assert raw.zcard(client.keys.q_ready("pq")) == 100, "parents woken by the finish"
    assert raw.zscore(client.keys.timers, child_id) is not None  # the rest: the timer waker
    per_call = []
    while True:
        read, _, late = client.scripts.wake_timers(500)
        per_call.append(len(late))
        assert len(per_call) <= 20
        if read < 500:
            break
    assert max(per_call) <= 500 and sum(per_call) == n - 100, per_call
    assert {status_of(raw, client, p) for p in parents} == {"queued"}
    assert raw.zcard(client.keys.q_ready("pq")) == n
    assert raw.zcard(client.keys.timers) == 0
    assert not raw.exists(client.keys.run_waiters(child_id))
    assert client.scripts.wake_timers(500)[0] == 0


def test_a_parent_awaiting_other_children_is_not_woken_by_the_slices(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The parents notified later (the timer waker's slices) follow the same rule
    as at the finish: a succeeded child wakes only a parent that awaits nothing else."""
    n = 300
    shared = enq(workflow="c", queue="cq")
    parents = [enq(workflow="p", queue="pq", max_concurrency=n) for _ in range(n)]
    own = [enq(workflow="d", queue="dq", parent=p, max_concurrency=n) for p in parents]
    mine = dict(zip(parents, own, strict=True))
    for i in range(n):
        run = claim_one(client, "pq")
        _suspend_on_children(client, run, [shared, mine[run.id]] if i % 2 else [shared])
    child = claim_one(client, "cq")
    assert client.scripts.finalize(child.id, child.token, "succeeded", b'"ok"') == "succeeded"
    for _ in range(10):
        client.scripts.wake_timers(50)
    still = {p for p in parents if raw.sismember(client.keys.run_awaits(p), mine[p])}
    assert len(still) == n // 2
    assert {status_of(raw, client, p) for p in still} == {"suspended"}
    assert {status_of(raw, client, p) for p in parents if p not in still} == {"queued"}
    assert raw.zcard(client.keys.timers) == 0


def test_retention_of_runs_with_many_event_names_is_done_in_bounded_calls(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Runs that were sent many distinct event names (up to max_events_per_run,
    10,000, unconsumed; consumed ones leave their name behind too): a retention
    call deletes a bounded number of their event lists and says to call again,
    instead of all of them (10 such runs: 520 ms of Redis in one call; the
    duty's batch of 500 runs: about 25 s)."""
    runs = [enq(workflow="e", queue="q") for _ in range(3)]
    for rid in runs:
        pipe = raw.pipeline(transaction=False)
        for i in range(5_000):
            pipe.rpush(client.keys.run_events(rid, f"item-{i}"), "1")
        pipe.sadd(client.keys.run_event_names(rid), *[f"item-{i}" for i in range(5_000)])
        pipe.execute()
        assert client.scripts.cancel(rid, "") == "canceled"
    plain = enq(workflow="e", queue="q")
    assert client.scripts.cancel(plain, "") == "canceled"
    wait_until(
        lambda: (
            client.server_time_ms() > int(raw.hget(client.keys.run(plain), "finishedAt") or 0) + 2
        )
    )

    def lists() -> int:
        return sum(1 for _ in raw.scan_iter(match=f"{client.keys.tag}:run:*:ev:*", count=1000))

    assert lists() == 15_000
    total = client.scripts.sweep(1, 500)
    # Before: every run and its 15,000 lists went in this one call.
    assert lists() >= 15_000 - 4_000, (total, lists())
    more, calls = True, 1
    while more:
        removed, more = client.scripts.sweep_step(1, 500)
        total += removed
        calls += 1
        assert calls < 10
    assert total == 4 and lists() == 0
    assert all(not raw.exists(client.keys.run(r)) for r in [*runs, plain])
    assert all(not raw.exists(client.keys.run_event_names(r)) for r in runs)


def test_a_wait_on_an_event_list_of_the_wrong_type_names_the_key_and_changes_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A neighbour's value under the event list a wait reads (``run:<id>:ev:...``):
    the suspend and the consume are refused naming that key, and the run stays
    running under its lease. Before, both failed with Redis' bare WRONGTYPE (no
    key named: the worker retried the suspend for good, logging only "found a
    key of the wrong type under prefix ...")."""
    run_id = enq(workflow="e", queue="q")
    run = claim_one(client, "q")
    events = client.keys.run_events(run_id, "go")
    raw.set(events, _JUNK)
    wait = RunWait(steps=["a"], kinds=["event"], events=["go"])
    with pytest.raises(WrongTypeError, match=re.escape(events)):
        client.scripts.suspend(run_id, run.token, wait)
    record = (b'{"seq":0,"status":"succeeded","outputJson":', b"}")
    with pytest.raises(WrongTypeError, match=re.escape(events)):
        client.scripts.consume_event(run_id, run.token, "a", "go", record, 60_000)
    assert status_of(raw, client, run_id) == "running"
    assert raw.zscore(client.keys.leases, run_id) is not None
    assert raw.hget(client.keys.run_steps(run_id), "a") is None
    assert raw.get(events) == _JUNK.encode()
    # the key removed, the same token suspends the run
    raw.delete(events)
    assert client.scripts.suspend(run_id, run.token, wait) == "suspended"


@pytest.mark.timeout(240)  # megabytes of waits: minutes on a loaded machine
def test_the_sweep_of_parents_of_large_fan_outs_holds_redis_briefly(
    raw: redis.Redis, client: Client
) -> None:
    """A page of suspended parents of large fan-outs (here 40 of 80,000 children
    each; 500 of 5,000 took 0.34 s): recheck_waits.lua decoded every parent's
    wait (which names every child, 1.3 MB each here) in one call, 52 MB of JSON,
    holding Redis for over a second every retention tick of the pass. Now a
    call decodes at most 1 MiB of waits past its first run and the page goes on
    over several calls; none of the parents is passed over."""
    n, kids = 40, 80_000
    tag = client.keys.tag
    ids = [f"P{i:03d}" for i in range(n)]
    for i, run_id in enumerate(ids):
        wait = RunWait(
            steps=["fan"],
            kinds=["children"],
            # children named in another shard: not judged here, the deadline is
            children=[f"K{i:03d}-{j:06d}~1" for j in range(kids)],
            wake_at=10**13,
        )
        raw.hset(f"{tag}:run:{run_id}", mapping={"status": "suspended", "wait": encode_wait(wait)})
        raw.zadd(client.keys.runs_status("suspended"), {run_id: i})
    raw.delete(client.keys.timers)  # lost: every parent's deadline is re-armed
    # Redis CPU time, not SLOWLOG's wall time (which a loaded machine stretches
    # past any bound), against the decoding of one wait on this server now: a
    # call reads two waits and decodes one (about 3 to 5 times that, with the
    # sweep's other reads); the whole page in one call decodes 40 (1.5 s).
    one = decode_cpu_ms(raw, f"{tag}:run:{ids[0]}", "wait")
    offset, rearmed, calls, cpu = 0, [], 0, []
    while True:
        before = server_cpu_ms(raw)
        offset, _, more = repair_suspended(client, client, offset)
        cpu.append(server_cpu_ms(raw) - before)
        rearmed += more
        calls += 1
        if offset == 0:
            break
    assert max(cpu) < 12 * one + 10, (
        f"a recheck call used {max(cpu):.0f} ms of Redis CPU; one wait decodes in {one:.0f} ms"
    )
    assert sorted(rearmed) == ids
    assert calls >= n  # a wait past 1 MiB / 2: one parent a call
    assert raw.zcard(client.keys.timers) == n


@pytest.mark.timeout(240)  # megabytes of waits: minutes on a loaded machine
def test_an_event_to_a_run_suspended_on_a_large_fan_out_does_not_decode_its_wait(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A run suspended on 200,000 children and an event (an async gather): its
    wait names every child (6 MB), and send_event.lua decoded it at every event
    sent to the run, about 50 ms of Redis each (a progress event a second to it
    cost 5 % of Redis). Now send_event reads the awaited names alone
    (``waitEvents``); an awaited name wakes the run as before, and a run
    suspended by an older version (no ``waitEvents``) is read from its wait."""
    run_id = enq(workflow="g", queue="q")
    run = claim_one(client, "q")
    kids = [f"K{j:07d}~1" for j in range(200_000)]  # in another shard
    wait = RunWait(
        steps=["fan", "ev"], kinds=["children", "event"], children=kids, events=["go/x", "b"]
    )
    # Suspended on the first 1,000 children, then the wait naming all of them put
    # in its place (what suspend_run stores: its argument as is): suspend_run
    # reads each child's status, 200,000 reads and over a second of Redis CPU,
    # past the client's 5 s socket timeout on a loaded machine (then BUSY).
    few = RunWait(steps=wait.steps, kinds=wait.kinds, children=kids[:1_000], events=wait.events)
    assert client.scripts.suspend(run_id, run.token, few) == "suspended"
    raw.hset(client.keys.run(run_id), "wait", encode_wait(wait))
    # Redis CPU time, not SLOWLOG's wall time (which a loaded machine stretches
    # past any bound), against the decoding of this wait once on this server now:
    # five events that each decoded it cost five times that.
    one = decode_cpu_ms(raw, client.keys.run(run_id), "wait")

    def five_events() -> None:
        for i in range(5):
            assert client.send_event(run_id, "progress", i)

    spent = cpu_ms_of(raw, five_events)
    assert spent < one / 2, (
        f"5 events used {spent:.0f} ms of Redis CPU; the wait decodes in {one:.0f} ms"
    )
    assert status_of(raw, client, run_id) == "suspended"
    assert client.send_event(run_id, "go/x", 1)
    assert status_of(raw, client, run_id) == "queued"
    assert raw.hget(client.keys.run(run_id), "waitEvents") is None
    # suspended by an older version: no waitEvents, the wait is read
    other_id = enq(workflow="h", queue="q2")
    other = claim_one(client, "q2")
    events = RunWait(steps=["a"], kinds=["event"], events=["go"])
    assert client.scripts.suspend(other_id, other.token, events) == "suspended"
    raw.hdel(client.keys.run(other_id), "waitEvents")
    assert client.send_event(other_id, "go", 1)
    assert status_of(raw, client, other_id) == "queued"


def test_an_event_wakes_a_run_an_older_version_suspended_again(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A rolling deploy: this version suspends a run waiting for event "a"
    (waitEvents ["a"]); an older supervisor wakes it (its wake removes `wait`
    alone) and an older worker claims it and suspends it again, waiting for event
    "b" (its suspend_run writes `wait`, not waitEvents). The stale waitEvents
    still named "a": event "b" did not wake the run, which waited for ever (or
    until its deadline). The names are read only when written by the suspension
    the run is in (its lease token); else from its wait."""
    run_id = enq(workflow="g", queue="q")
    run = claim_one(client, "q")
    assert (
        client.scripts.suspend(
            run_id, run.token, RunWait(steps=["a"], kinds=["event"], events=["a"])
        )
        == "suspended"
    )
    # what the older version's wake, claim and suspend_run leave in the run hash
    older = new_token()
    raw.hset(
        client.keys.run(run_id),
        mapping={
            "wait": encode_wait(RunWait(steps=["b"], kinds=["event"], events=["b"])),
            "doneToken": older,
            "lease": older,
        },
    )
    assert client.send_event(run_id, "b", 1)
    assert status_of(raw, client, run_id) == "queued", (
        "event 'b' did not wake the run the older version suspended on it"
    )
