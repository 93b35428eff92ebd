"""suspend_run / wake / send_event / consume_event / wake_timers at the script
level: no lost or doubled wake-up, events consumed once and in order."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait, StoredStep, decode_step, encode_step
from redflow_mp.ids import new_token
from redflow_mp.scripts import Claimed
from redflow_mp.wait_scripts import EventLimitError
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(30)


def _claim(client: Client, queue: str = "q") -> Claimed:
    _, claimed = client.scripts.claim((queue,), 5_000, new_token())
    assert claimed is not None
    return claimed


def _finish(client: Client, run: Claimed, output: bytes = b'"ok"') -> str | None:
    return client.scripts.finalize(run.id, run.token, "succeeded", output)


def _record_parts(attempt: int = 1) -> tuple[bytes, bytes]:
    data = encode_step(
        StoredStep(seq=0, status="succeeded", started_at=1, finished_at=2, attempt=attempt)
    )
    return data[:-1] + b',"outputJson":', b"}"


def test_child_finishing_before_the_suspend_resumes_at_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    child_id = enq(workflow="c", queue="cq", parent=parent_id)
    child = _claim(client, "cq")
    assert _finish(client, child) == "succeeded"  # between the handler's check and its suspend
    wait = RunWait(steps=["s"], kinds=["children"], children=[child_id])
    assert client.scripts.suspend(parent_id, parent.token, wait) == "resume"
    assert status_of(raw, client, parent_id) == "running"  # lease kept, nothing registered
    assert not raw.exists(client.keys.run_awaits(parent_id))
    assert raw.zscore(client.keys.leases, parent_id) is not None


def test_child_finishing_after_the_suspend_wakes_the_parent_exactly_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    a = enq(workflow="c", queue="cq", parent=parent_id)
    b = enq(workflow="c", queue="cq", parent=parent_id)
    wait = RunWait(steps=["s"], kinds=["children"], children=[a, b])
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    assert status_of(raw, client, parent_id) == "suspended"
    assert raw.zscore(client.keys.leases, parent_id) is None
    assert raw.sismember(client.keys.wf_running("p"), parent_id)  # slot kept
    assert raw.smembers(client.keys.run_awaits(parent_id)) == {a.encode(), b.encode()}
    # a resend of the same suspend (lost reply) changes nothing
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    first = _claim(client, "cq")
    _finish(client, first)
    assert status_of(raw, client, parent_id) == "suspended"  # one child still running
    second = _claim(client, "cq")
    assert client.scripts.finalize(second.id, second.token, "failed", b'{"type":"X","message":"m"}')
    assert status_of(raw, client, parent_id) == "queued"
    assert raw.zrange(client.keys.q_ready("pq"), 0, -1) == [parent_id.encode()]
    # the woken run is claimed although the workflow is at its limit (1): its slot
    again = _claim(client, "pq")
    assert again.id == parent_id and again.attempt == 1
    assert raw.scard(client.keys.wf_running("p")) == 1
    assert not raw.exists(client.keys.run_waiters(a))


def test_events_sent_before_the_wait_resume_and_are_consumed_in_order_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="e", queue="q")
    assert client.scripts.send_event(run_id, "go", b'"one"', 10) is True
    assert client.scripts.send_event(run_id, "go", b'"two"', 10) is True
    run = _claim(client)
    wait = RunWait(steps=["a"], kinds=["event"], events=["go"])
    assert client.scripts.suspend(run_id, run.token, wait) == "resume"
    got = [
        client.scripts.consume_event(run_id, run.token, step, "go", _record_parts(), 5_000)
        for step in ("a", "b", "c")
    ]
    assert [g[0] for g in got] == [1, 1, 0]
    assert [g[1] for g in got[:2]] == [b'"one"', b'"two"']
    record = raw.hget(client.keys.run_steps(run_id), "a")
    assert record is not None and decode_step(record).output_json == '"one"'
    assert raw.hget(client.keys.run(run_id), "eventsPending") == b"0"
    # a resend of a consume whose reply was lost returns the recorded event only
    again = client.scripts.consume_event(run_id, run.token, "a", "go", _record_parts(), 5_000)
    assert again[0] == 1 and again[1] == b'"one"'
    assert raw.llen(client.keys.run_events(run_id, "go")) == 0
    # not the lease holder: nothing consumed
    client.scripts.send_event(run_id, "go", b'"three"', 10)
    assert client.scripts.consume_event(run_id, "other", "d", "go", _record_parts(), 5_000)[0] == -1
    assert raw.llen(client.keys.run_events(run_id, "go")) == 1


def test_send_event_wakes_only_a_run_waiting_for_that_name(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="e", queue="q")
    run = _claim(client)
    wait = RunWait(steps=["a"], kinds=["event"], events=["go"], wake_at=2**41)
    assert client.scripts.suspend(run_id, run.token, wait) == "suspended"
    assert raw.zscore(client.keys.timers, run_id) == 2**41
    assert client.scripts.send_event(run_id, "other", b"1", 10) is True
    assert status_of(raw, client, run_id) == "suspended"
    assert client.scripts.send_event(run_id, "go", b"2", 10) is True
    assert status_of(raw, client, run_id) == "queued"
    assert raw.zscore(client.keys.timers, run_id) is None
    assert raw.hget(client.keys.run(run_id), "wait") is None
    assert client.scripts.send_event("missing", "go", b"1", 10) is False


def test_wake_timers_wakes_due_runs_only_and_reports_lateness(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    now = client.server_time_ms()
    ids = [enq(workflow=f"s{i}", queue="q") for i in range(3)]
    for i in range(3):
        run = _claim(client)
        at = now - 50 if i < 2 else now + 3_600_000
        wait = RunWait(steps=["z"], kinds=["sleep"], wake_at=at)
        expected = "resume" if i < 2 else "suspended"
        assert client.scripts.suspend(run.id, run.token, wait) == expected
        if i < 2:  # put it to sleep anyway, as if suspended just before its time
            raw.hset(client.keys.run(run.id), "status", "suspended")
            raw.zrem(client.keys.runs_status("running"), run.id)
            raw.zadd(client.keys.runs_status("suspended"), {run.id: now})
            raw.zrem(client.keys.leases, run.id)
            raw.zadd(client.keys.timers, {run.id: at})
    read, earliest, late = client.scripts.wake_timers(100)
    assert read == 2 and len(late) == 2 and all(x >= 50 for x in late)
    assert earliest == now + 3_600_000
    assert [status_of(raw, client, i) for i in ids] == ["queued", "queued", "suspended"]


def test_cancel_of_a_suspended_run_frees_everything(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    child_id = enq(workflow="c", queue="cq", parent=parent_id)
    wait = RunWait(steps=["s"], kinds=["children"], children=[child_id], wake_at=2**41)
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    assert client.scripts.cancel(parent_id, "stop") == "canceled"
    assert raw.zscore(client.keys.timers, parent_id) is None
    assert not raw.exists(client.keys.run_awaits(parent_id))
    assert raw.scard(client.keys.wf_running("p")) == 0
    # the child's later finish finds a canceled parent: no wake
    child = _claim(client, "cq")
    _finish(client, child)
    assert status_of(raw, client, parent_id) == "canceled"
    assert raw.zcard(client.keys.q_ready("pq")) == 0


def test_suspend_with_a_pending_cancel_ends_canceled(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    run_id = enq(workflow="p", queue="q")
    run = _claim(client)
    assert client.scripts.cancel(run_id, "") == "running"
    wait = RunWait(steps=["z"], kinds=["sleep"], wake_at=2**41)
    assert client.scripts.suspend(run_id, run.token, wait) == "canceled"
    assert raw.zcard(client.keys.timers) == 0


def test_retention_removes_the_wait_keys_with_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    client.scripts.enqueue("child-1", "c", "cq", b"{}", 1, 0, "", 0, parent_id, "", None, None)
    client.scripts.send_event(parent_id, "ev", b"1", 10)
    wait = RunWait(steps=["s"], kinds=["children"], children=["child-1"], wake_at=2**41)
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    assert client.scripts.cancel(parent_id, "") == "canceled"
    raw.sadd(client.keys.run_children(parent_id), "child-1")
    raw.zadd(client.keys.runs_status("canceled"), {parent_id: 1})
    assert client.scripts.sweep(1, 100) >= 1
    for key in (
        client.keys.run(parent_id),
        client.keys.run_events(parent_id, "ev"),
        client.keys.run_event_names(parent_id),
        client.keys.run_children(parent_id),
        client.keys.run_awaits(parent_id),
    ):
        assert not raw.exists(key), key


def test_a_failed_child_wakes_the_parent_with_others_pending(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    a = enq(workflow="c1", queue="cq", parent=parent_id)
    b = enq(workflow="c2", queue="cq", parent=parent_id)
    wait = RunWait(steps=["s"], kinds=["children"], children=[a, b])
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    first = _claim(client, "cq")
    assert client.scripts.finalize(first.id, first.token, "failed", b'{"type":"X","message":"m"}')
    assert status_of(raw, client, parent_id) == "queued"
    assert raw.zcard(client.keys.q_ready("pq")) == 1
    # the other child's later finish finds the parent awake: nothing more happens
    second = _claim(client, "cq")
    assert _finish(client, second) == "succeeded"
    assert raw.zcard(client.keys.q_ready("pq")) == 1
    # and a suspend that finds a failed child resumes at once
    again = _claim(client, "pq")
    assert client.scripts.suspend(parent_id, again.token, wait) == "resume"


def test_event_and_deadline_racing_wake_the_run_once(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Two wakers (send_event and two promoters' wake_timers) on one run: it is
    queued once, in its ready set once."""
    run_id = enq(workflow="e", queue="q")
    run = _claim(client)
    soon = client.server_time_ms() + 30
    wait = RunWait(steps=["a"], kinds=["event"], events=["go"], wake_at=soon)
    assert client.scripts.suspend(run_id, run.token, wait) == "suspended"
    while client.server_time_ms() <= soon:
        pass
    assert client.scripts.send_event(run_id, "go", b"1", 10) is True
    assert client.scripts.wake_timers(10)[2] == []  # its timer went with the wake
    assert client.scripts.wake_timers(10)[2] == []
    assert status_of(raw, client, run_id) == "queued"
    assert raw.zrange(client.keys.q_ready("q"), 0, -1) == [run_id.encode()]
    assert raw.zcard(client.keys.runs_status("queued")) == 1
    assert raw.zcard(client.keys.runs_status("suspended")) == 0


def test_a_woken_run_is_not_a_new_start_under_a_rate_limit(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A resume is not a start: a run woken from its wait passes the rate gate
    (its first claim used the window's only slot) and keeps its attempt's start."""
    k = client.keys
    raw.hset(k.workflow("p"), mapping={"name": "p", "maxConcurrency": 10, "rateLimit": "1/h"})
    parent_id = enq(workflow="p", queue="pq")
    parent = _claim(client, "pq")
    started = raw.hget(k.run(parent_id), "attemptStartedAt")
    assert raw.zcard(k.rate("p")) == 1  # the window is full now
    child_id = enq(workflow="c", queue="cq", parent=parent_id)
    wait = RunWait(steps=["s"], kinds=["children"], children=[child_id])
    assert client.scripts.suspend(parent_id, parent.token, wait) == "suspended"
    _finish(client, _claim(client, "cq"))
    assert status_of(raw, client, parent_id) == "queued"  # woken
    again = _claim(client, "pq")  # not deferred to the next hour
    assert again.id == parent_id and status_of(raw, client, parent_id) == "running"
    assert raw.zcard(k.rate("p")) == 1 and raw.hget(k.run(parent_id), "rateSlot") is None
    assert raw.hget(k.run(parent_id), "attemptStartedAt") == started


def test_the_last_of_two_parents_holding_every_slot_is_not_suspended_on_its_own_workflow(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The deadlock rule, decided with the suspension: two parents of workflow x
    (max_concurrency 2) each await a child of x that holds no slot. The first
    suspends (the other still runs); the second would leave no slot for either
    child: it is told to resume, and its replayed check fails the step."""
    p1_id = enq(workflow="x", queue="xq", max_concurrency=2)
    p2_id = enq(workflow="x", queue="xq", max_concurrency=2)
    p1, p2 = _claim(client, "xq"), _claim(client, "xq")
    assert {p1.id, p2.id} == {p1_id, p2_id}
    c1 = enq(workflow="x", queue="xq", parent=p1.id, max_concurrency=2)
    c2 = enq(workflow="x", queue="xq", parent=p2.id, max_concurrency=2)
    first = RunWait(steps=["me"], kinds=["children"], children=[c1])
    assert client.scripts.suspend(p1.id, p1.token, first) == "suspended"
    second = RunWait(steps=["me"], kinds=["children"], children=[c2])
    assert client.scripts.suspend(p2.id, p2.token, second) == "resume"
    assert status_of(raw, client, p2.id) == "running"  # lease kept, nothing registered
    assert raw.zscore(client.keys.leases, p2.id) is not None
    assert not raw.exists(client.keys.run_waiters(c2))
    # a child of another workflow, or a free slot, is no deadlock: it suspends
    other = enq(workflow="y", queue="yq", parent=p2.id)
    assert (
        client.scripts.suspend(
            p2.id, p2.token, RunWait(steps=["y"], kinds=["children"], children=[other])
        )
        == "suspended"
    )


def test_the_deadlock_rule_holds_past_256_slots(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """300 parents of workflow x (max_concurrency 300) hold every slot, each
    awaiting a child of x that no slot is left for: the last to suspend is told to
    resume (its replayed check fails the step), as with 2 slots. Past 256 slots
    the rule read nothing and it suspended: every slot held for good."""
    n = 300
    for _ in range(n):
        enq(workflow="x", queue="xq", max_concurrency=n)
    parents = [_claim(client, "xq") for _ in range(n)]
    kids = [enq(workflow="x", queue="xq", parent=p.id, max_concurrency=n) for p in parents]
    assert raw.scard(client.keys.wf_running("x")) == n  # no slot is free for a child
    for p, kid in zip(parents[:-1], kids[:-1], strict=True):
        wait = RunWait(steps=["me"], kinds=["children"], children=[kid])
        assert client.scripts.suspend(p.id, p.token, wait) == "suspended"
    last = parents[-1]
    wait = RunWait(steps=["me"], kinds=["children"], children=[kids[-1]])
    assert client.scripts.suspend(last.id, last.token, wait) == "resume"
    assert status_of(raw, client, last.id) == "running"


def test_wf_suspended_holds_the_suspended_slot_holders_only(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The deadlock rule's count past 256 slots: a suspension adds the run, its
    wake-up and its cancel remove it."""
    k = client.keys
    enq(workflow="x", queue="xq", max_concurrency=5)
    enq(workflow="x", queue="xq", max_concurrency=5)
    a, b = _claim(client, "xq"), _claim(client, "xq")
    child = enq(workflow="y", queue="yq", parent=a.id)
    wait = RunWait(steps=["me"], kinds=["children"], children=[child])
    assert client.scripts.suspend(a.id, a.token, wait) == "suspended"
    nap = RunWait(steps=["nap"], kinds=["sleep"], wake_at=client.server_time_ms() + 60_000)
    assert client.scripts.suspend(b.id, b.token, nap) == "suspended"
    assert raw.smembers(k.wf_suspended("x")) == {a.id.encode(), b.id.encode()}
    assert client.scripts.cancel(b.id, "") == "canceled"
    assert raw.smembers(k.wf_suspended("x")) == {a.id.encode()}
    kid = _claim(client, "yq")
    assert _finish(client, kid) == "succeeded"  # wakes a: queued, still holding its slot
    assert status_of(raw, client, a.id) == "queued"
    assert not raw.exists(k.wf_suspended("x"))


def test_the_event_byte_budget_counts_unconsumed_payloads_only(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """send_event refuses a payload that would take the run's unconsumed payloads
    past the budget (nothing stored); consume_event gives its bytes back."""
    run_id = enq(workflow="e", queue="q")
    assert client.scripts.send_event(run_id, "go", b'"0123456789"', 10, "", 24) is True
    assert client.scripts.send_event(run_id, "go", b'"0123456789"', 10, "", 24) is True
    with pytest.raises(EventLimitError, match="hold 24 bytes"):
        client.scripts.send_event(run_id, "go", b"1", 10, "", 24)
    assert raw.llen(client.keys.run_events(run_id, "go")) == 2
    run = _claim(client)
    got = client.scripts.consume_event(run_id, run.token, "a", "go", _record_parts(), 5_000)
    assert got[0] == 1
    assert raw.hget(client.keys.run(run_id), "eventBytes") == b"12"
    assert client.scripts.send_event(run_id, "go", b'"0123456789"', 10, "", 24) is True
    assert raw.hget(client.keys.run(run_id), "eventBytes") == b"24"
