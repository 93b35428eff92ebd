"""Review probes of the paged suspend (await_children.lua, suspend_run 'paged'):
two registrations under different tokens interleaved, a second paged wait of the
same lease after a resume, a wait on children + events + a deadline, the deadlock
rule, and a failed child whose notification of the parent is deferred."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait
from redflow_mp.ids import new_run_id
from tests.helpers import claim_one, status_of
from tests.lua.test_paged_suspend import (
    _FAILED,
    SUSPEND_PAGE,
    _calls,
    _finish,
)

pytestmark = pytest.mark.timeout(180)


def _fan(kids: list[str], **kw: object) -> RunWait:
    return RunWait(steps=["fan"], kinds=["children"], children=kids, **kw)  # type: ignore[arg-type]


def test_a_registration_overtaken_by_the_next_claims_leaves_that_claim_s_wait_whole(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Lease A registers page 1, loses its lease (the reaper puts the run back),
    lease B claims it and suspends on the same fan-out (paged, in full); then A's
    later pages and final call arrive: refused, nothing of B's registration
    changes, and the run wakes once, at the last child's finish."""
    parent = enq(workflow="p", queue="p")
    a = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]
    wait = _fan(kids)
    state: dict[str, str] = {}

    def overtake(name: str, k: int) -> None:
        if k != 0 or state:
            return
        raw.zadd(client.keys.leases, {parent: 1})  # expired
        _, requeued, _ = client.scripts.reap(10)
        assert requeued == [parent]
        b = claim_one(client, "p")
        assert b.id == parent and b.token != a.token
        state["b"] = b.token
        assert client.scripts.suspend(parent, b.token, wait) == "suspended"

    with _calls(client, overtake):
        assert client.scripts.suspend(parent, a.token, wait) == "lease-lost"
    assert status_of(raw, client, parent) == "suspended"
    assert raw.scard(client.keys.run_awaits(parent)) == n
    assert text_of(raw.hget(client.keys.run(parent), "awaitsToken")) == state["b"]
    # A's final call resent on its own: refused, B's suspension unchanged
    assert client.scripts.suspend(parent, a.token, _fan(kids[:3])) == "lease-lost"
    for i in range(n):
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "succeeded", b"1")
        assert status_of(raw, client, parent) == ("queued" if i == n - 1 else "suspended")


def text_of(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


def test_a_second_paged_wait_of_the_same_lease_is_not_woken_by_the_first_one_s_children(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """W1 (paged) ends in resume at its second page (a child failed); the same
    lease then suspends on W2 (paged, other children): W1's children, still
    naming the run in their waiters sets, fail, and neither mark nor wake it; it
    wakes at W2's last child. Then a non-paged wait after it works as ever."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    w1 = [enq(workflow="c", queue="c1-x" if i == SUSPEND_PAGE + 3 else "c1") for i in range(n)]
    _finish(client, "c1-x", w1[SUSPEND_PAGE + 3], "failed")
    assert client.scripts.suspend(parent, run.token, _fan(w1)) == "resume"
    assert not raw.exists(client.keys.run_awaits(parent))  # page 1's set: dropped
    assert raw.sismember(client.keys.run_waiters(w1[0]), parent)  # page 1's, stale
    w2 = [enq(workflow="c", queue="c2") for _ in range(n)]
    assert client.scripts.suspend(parent, run.token, _fan(w2)) == "suspended"
    assert raw.hget(client.keys.run(parent), "awaitFailed") is None
    for _ in range(SUSPEND_PAGE):  # W1's page-1 children fail
        kid = claim_one(client, "c1")
        assert client.scripts.finalize(kid.id, kid.token, "failed", _FAILED)
    assert status_of(raw, client, parent) == "suspended"
    assert raw.scard(client.keys.run_awaits(parent)) == n
    for i in range(n):
        kid = claim_one(client, "c2")
        assert client.scripts.finalize(kid.id, kid.token, "succeeded", b"1")
        assert status_of(raw, client, parent) == ("queued" if i == n - 1 else "suspended")
    again = claim_one(client, "p")
    one = enq(workflow="c", queue="c3")
    assert client.scripts.suspend(again.id, again.token, _fan([one])) == "suspended"
    _finish(client, "c3", one)
    assert status_of(raw, client, parent) == "queued"


@pytest.mark.parametrize("what", ["event", "deadline"])
def test_a_paged_wait_on_children_events_and_a_deadline(
    raw: redis.Redis, client: Client, enq: Callable[..., str], what: str
) -> None:
    """An event sent between pages, or the deadline passed by the time of the
    final call, resumes the run, and the awaited set the pages built goes with
    that decision (200,000 members left to the run's retention otherwise); the
    same wait suspended whole wakes at the event / keeps the deadline's timer."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]
    now = client.server_time_ms()

    def between(name: str, k: int) -> None:
        if k == 0 and what == "event":
            assert client.scripts.send_event(parent, "go", b"1", 100, key="k1")

    wake_at = now if what == "deadline" else now + 3_600_000  # (reached: at once)
    wait = RunWait(
        steps=["fan", "ev"],
        kinds=["children", "event"],
        children=kids,
        events=["go"],
        wake_at=wake_at,
    )
    with _calls(client, between):
        assert client.scripts.suspend(parent, run.token, wait) == "resume"
    assert status_of(raw, client, parent) == "running"
    assert not raw.exists(client.keys.run_awaits(parent))
    if what == "event":
        raw.delete(client.keys.run_events(parent, "go"))
    later = RunWait(
        steps=["fan", "ev"],
        kinds=["children", "event"],
        children=kids,
        events=["go"],
        wake_at=client.server_time_ms() + 3_600_000,
    )
    assert client.scripts.suspend(parent, run.token, later) == "suspended"
    assert raw.zscore(client.keys.timers, parent) == later.wake_at
    assert client.scripts.send_event(parent, "go", b"2", 100, key="k2")
    assert status_of(raw, client, parent) == "queued"
    assert not raw.exists(client.keys.run_awaits(parent))


def test_the_deadlock_rule_holds_for_a_paged_wait(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """As the non-paged rule. Workflow x, max_concurrency 3: p1 suspended on a
    child of x holding no slot, child k (of x) suspended on a sleep holding the
    third. p2 awaits more than a page of x children none of which holds a slot:
    resumed (every other slot held by a suspended run), its awaited set dropped.
    The same fan-out with k in it (a child holding a slot): p2 suspends."""
    ids = [enq(workflow="x", queue="xq", max_concurrency=3) for _ in range(3)]
    p1, p2, k = (claim_one(client, "xq") for _ in range(3))
    assert {p1.id, p2.id, k.id} == set(ids)
    c1 = enq(workflow="x", queue="xc1", max_concurrency=3)
    assert client.scripts.suspend(p1.id, p1.token, _fan([c1])) == "suspended"
    nap = RunWait(steps=["nap"], kinds=["sleep"], wake_at=client.server_time_ms() + 3_600_000)
    assert client.scripts.suspend(k.id, k.token, nap) == "suspended"
    kids = [enq(workflow="x", queue="xc2", max_concurrency=3) for _ in range(SUSPEND_PAGE + 1)]
    assert client.scripts.suspend(p2.id, p2.token, _fan(kids)) == "resume"
    assert status_of(raw, client, p2.id) == "running"
    assert not raw.exists(client.keys.run_awaits(p2.id))
    assert client.scripts.suspend(p2.id, p2.token, _fan([*kids, k.id])) == "suspended"
    assert raw.scard(client.keys.run_awaits(p2.id)) == len(kids) + 1


def test_a_failed_child_s_deferred_notification_wakes_a_parent_that_paged_meanwhile(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A child with many waiters notifies 100 of them at its finish, the rest by
    the timers duty. It fails after the parent's page registered it and before
    the final call: the parent suspends (not notified yet) and the duty's
    notification wakes it (its wait step then fails)."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c-x" if i == 0 else "c") for i in range(n)]
    others = [new_run_id() for _ in range(3000)]  # (parents that are no one)
    raw.sadd(client.keys.run_waiters(kids[0]), *others)

    def fail_first(name: str, k: int) -> None:
        if k == 1:  # after the last page
            _finish(client, "c-x", kids[0], "failed")

    with _calls(client, fail_first):
        got = client.scripts.suspend(parent, run.token, _fan(kids))
    if got == "resume":  # notified at the finish (among its 100): marked
        assert status_of(raw, client, parent) == "running"
        return
    assert got == "suspended"
    for _ in range(100):
        client.scripts.wake_timers(1000)
        if status_of(raw, client, parent) != "suspended":
            break
    assert status_of(raw, client, parent) == "queued"


@pytest.mark.parametrize("mode", ["succeeded", "failed"])
def test_each_page_and_the_final_call_sent_twice_with_a_finish_between(
    raw: redis.Redis, client: Client, enq: Callable[..., str], mode: str
) -> None:
    """Each call of a paged suspend applied, its reply lost and the call sent
    again (the transport's resend), with a child of page 2 finishing between
    the two sends of page 2: succeeded, it is not registered again and the run
    wakes at its last child; failed, the resend resumes the run."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    x = SUSPEND_PAGE + 5
    kids = [enq(workflow="c", queue="c-x" if i == x else "c") for i in range(n)]
    scripts: Any = client.scripts
    real = scripts.run
    sent: list[str] = []

    def twice(name: str, keys: Any, args: Any, *, retry: bool) -> Any:
        if name not in ("await_children", "suspend_run"):
            return real(name, keys, args, retry=retry)
        real(name, keys, args, retry=retry)  # applied, its reply lost
        sent.append(name)
        if name == "await_children" and len(sent) == 2:
            _finish(client, "c-x", kids[x], mode)
        return real(name, keys, args, retry=retry)

    scripts.run = twice
    try:
        got = client.scripts.suspend(parent, run.token, _fan(kids))
    finally:
        del scripts.run
    if mode == "failed":
        assert got == "resume"
        assert status_of(raw, client, parent) == "running"
        assert not raw.exists(client.keys.run_awaits(parent))
        return
    assert got == "suspended"
    assert sent == ["await_children"] * 3 + ["suspend_run"]
    assert raw.scard(client.keys.run_awaits(parent)) == n - 1
    assert not raw.sismember(client.keys.run_awaits(parent), kids[x])
    for i in range(n - 1):
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "succeeded", b"1")
        assert status_of(raw, client, parent) == ("queued" if i == n - 2 else "suspended")


def test_retention_removes_a_parent_whose_paged_registration_was_abandoned(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Page 1 registered, then the lease lost for good (the run put back, claimed
    again, and failed): retention removes the run with the awaited set page 1
    built; the children then finish as usual, nothing left of the parent."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]

    def lose(name: str, k: int) -> None:
        if k == 0:
            raw.zadd(client.keys.leases, {parent: 1})
            assert client.scripts.reap(10)[1] == [parent]

    with _calls(client, lose):
        assert client.scripts.suspend(parent, run.token, _fan(kids)) == "lease-lost"
    assert raw.scard(client.keys.run_awaits(parent)) == SUSPEND_PAGE
    again = claim_one(client, "p")
    assert client.scripts.finalize(parent, again.token, "failed", _FAILED) == "failed"
    raw.zadd(client.keys.runs_status("failed"), {parent: 1})  # long ago
    removed, _ = client.scripts.sweep_step(1, 100)
    assert removed == 1
    assert not raw.exists(client.keys.run(parent), client.keys.run_awaits(parent))
    for _ in range(3):
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "failed", _FAILED) == "failed"
    assert not raw.exists(client.keys.run(parent))


def _sismember_calls(raw: redis.Redis) -> int:
    stats: Any = raw.info("commandstats")
    return int(stats.get("cmdstat_sismember", {}).get("calls", 0))


def test_the_paged_deadlock_rule_reads_the_smaller_set_and_only_when_needed(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Workflow x with 20,000 slots, all held: the paged rule looked at every
    slot holder (SISMEMBER in the awaited set each: 200,000 slots held Redis
    213 ms in the final call) before it looked whether the other holders are
    all suspended. Now that (O(1) past 256 slots) comes first, and only then
    the smaller of the two sets is read: a busy workflow costs no scan, a
    stuck candidate one of its awaited children at most."""
    slots = 20_000
    p = enq(workflow="x", queue="xq", max_concurrency=slots)
    run = claim_one(client, "xq")
    raw.hset(client.keys.workflow("x"), "maxConcurrency", slots)
    fakes = [f"f{i}" for i in range(slots - 1)]  # the other holders, suspended
    for i in range(0, len(fakes), 5_000):
        raw.sadd(client.keys.wf_running("x"), *fakes[i : i + 5_000])
        raw.sadd(client.keys.wf_suspended("x"), *fakes[i : i + 5_000])
    kids = [enq(workflow="x", queue="xc", max_concurrency=slots) for _ in range(SUSPEND_PAGE + 1)]
    # one other holder still running: no deadlock, and no scan of either set
    raw.srem(client.keys.wf_suspended("x"), fakes[0])
    calls: list[int] = []

    def count(name: str, k: int) -> None:
        calls.append(_sismember_calls(raw))

    before = _sismember_calls(raw)
    with _calls(client, count):
        assert client.scripts.suspend(p, run.token, _fan(kids)) == "suspended"
    assert calls[-1] - calls[-2] < 50, calls[-1] - calls[-2]
    assert calls[0] >= before
    # every other holder suspended, none of them awaited: a deadlock (resume),
    # decided reading the awaited set (the smaller), not the 20,000 holders
    raw.sadd(client.keys.wf_suspended("x"), fakes[0])
    p2 = enq(workflow="x", queue="xq2", max_concurrency=slots)
    raw.srem(client.keys.wf_running("x"), fakes[1])  # (a slot for p2)
    raw.srem(client.keys.wf_suspended("x"), fakes[1])
    run2 = claim_one(client, "xq2")
    calls.clear()
    with _calls(client, count):
        assert client.scripts.suspend(p2, run2.token, _fan(kids)) == "resume"
    assert calls[-1] - calls[-2] <= len(kids) + 50, calls[-1] - calls[-2]


def test_a_paged_wait_resumed_by_a_failed_child_leaves_no_await_failed_mark(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A child of a paged wait fails while its parent still registers pages (it
    marks the run ``awaitFailed``); the final suspend resumes on that mark. The
    mark was consumed: it goes. Before, it stayed on the run for good when the
    next wait was small (not paged, so no first page cleared it): the CI's Valkey
    9 step failed ``assert b'01M98DPY7TXB6WH74AFKRN4MRP' is None`` in
    tests/integration/test_paged_suspend_worker.py."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="cx" if i == 0 else "c") for i in range(n)]
    failed = [False]

    def fail_first_child(name: str, k: int) -> None:
        if name == "await_children" and k == 0 and not failed[0]:
            failed[0] = True  # after page 1 registered it, before page 2
            _finish(client, "cx", kids[0], "failed")
            assert raw.hget(client.keys.run(parent), "awaitFailed") == kids[0].encode()

    with _calls(client, fail_first_child):
        assert client.scripts.suspend(parent, run.token, _fan(kids)) == "resume"
    assert failed[0]
    assert raw.hget(client.keys.run(parent), "awaitFailed") is None
    small = [enq(workflow="c", queue="c2")]
    assert client.scripts.suspend(parent, run.token, _fan(small)) == "suspended"
    assert raw.hget(client.keys.run(parent), "awaitFailed") is None
