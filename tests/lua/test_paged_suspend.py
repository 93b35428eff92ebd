"""A suspend on a large fan-out is paged (await_children.lua, then suspend_run
decides on what the pages left): no single call reads every child, and a child
that finishes between pages still wakes the run, or is seen by the final check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from redflow_mp import Client, create_client, wait_scripts, xshard
from redflow_mp.codec import RunWait
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.shards import run_id_for_shard
from tests.helpers import claim_one, server_cpu_ms, status_of, text

pytestmark = pytest.mark.timeout(120)

_FAILED = b'{"type":"X","message":"m"}'
# children registered per call (before paging, one call took them all: the
# default keeps these tests meaningful against that code, which failed them)
SUSPEND_PAGE: int = getattr(wait_scripts, "SUSPEND_PAGE", 1_000)


def _finish(client: Client, queue: str, run_id: str, mode: str = "succeeded") -> None:
    """Claim the one run of ``queue`` (``run_id``) and finish it."""
    run = claim_one(client, queue)
    assert run.id == run_id
    payload = _FAILED if mode == "failed" else f'"out-{run_id}"'.encode()
    assert client.scripts.finalize(run.id, run.token, mode, payload) == mode


def enq_on(shard: Any, queue: str) -> str:
    """Enqueue a run of workflow "p" in ``shard`` (a shard of a sharded client)."""
    rid, _ = shard.scripts.enqueue(
        shard.run_id(new_run_id()), "p", queue, b"{}", 1, 0, "", 60_000, "", "", None, None
    )
    return str(rid)


@contextmanager
def _calls(client: Any, after: Callable[[str, int], None] | None = None) -> Iterator[list[Any]]:
    """Record each suspend call (await_children, suspend_run: name, Redis CPU ms of
    the call) the client sends; ``after(name, n)`` runs after the n-th returned."""
    calls: list[Any] = []
    scripts: Any = client.scripts
    real = scripts.run
    raw = client.redis

    def run(name: str, keys: Any, args: Any, *, retry: bool) -> Any:
        if name not in ("await_children", "suspend_run"):  # (the children's own)
            return real(name, keys, args, retry=retry)
        before = server_cpu_ms(raw)
        reply = real(name, keys, args, retry=retry)
        calls.append((name, server_cpu_ms(raw) - before))
        if after is not None:
            after(name, len(calls) - 1)
        return reply

    scripts.run = run
    try:
        yield calls
    finally:
        del scripts.run


@pytest.mark.timeout(600)  # 200,000 children: minutes on a loaded machine
def test_a_suspend_on_200k_children_holds_redis_a_page_at_a_time(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """One suspend_run call read and registered all 200,000 children (1.26 s of
    Redis CPU with every other client blocked). Now no call of the suspend takes
    more than a tenth of the whole suspend's Redis CPU (a page is 1 % of it)."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    kids = [new_run_id() for _ in range(200_000)]
    pipe = raw.pipeline(transaction=False)
    for i, kid in enumerate(kids):
        pipe.hset(client.keys.run(kid), mapping={"id": kid, "status": "queued", "workflow": "c"})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
    with _calls(client) as calls:
        assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    total = sum(cpu for _, cpu in calls)
    biggest = max(cpu for _, cpu in calls)
    assert biggest < total / 10, (
        f"one call of the suspend used {biggest:.0f} ms of Redis CPU, of {total:.0f} ms "
        f"for the whole suspend ({len(calls)} calls)"
    )
    assert len(calls) == len(kids) // SUSPEND_PAGE + 1
    assert raw.scard(client.keys.run_awaits(parent)) == len(kids)
    assert raw.sismember(client.keys.run_waiters(kids[-1]), parent)
    assert status_of(raw, client, parent) == "suspended"


def test_children_finishing_between_pages_wake_the_run_once_with_every_outcome(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Children finish while the run registers its wait a page at a time: one
    registered by an earlier page (its finish finds the run in its waiters set),
    one of a later page (read finished there), and, after the last page, before
    the final check, one more. The run suspends, then wakes exactly once, at the
    last child's finish, and every child's outcome is there to read."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 3 * SUSPEND_PAGE + 5
    special = {0: "c-a", SUSPEND_PAGE + 1: "c-b", 2 * SUSPEND_PAGE + 3: "c-c", n - 1: "c-d"}
    kids = [enq(workflow="c", queue=special.get(i, "c")) for i in range(n)]

    def between(name: str, k: int) -> None:
        if k == 0:  # after page 1: a child it registered, and one of page 4
            _finish(client, "c-a", kids[0])
            _finish(client, "c-d", kids[n - 1])
        elif k == 1:  # after page 2: one of page 3 and one it registered
            _finish(client, "c-c", kids[2 * SUSPEND_PAGE + 3])
        elif name == "await_children" and k == 3:  # after the last page
            _finish(client, "c-b", kids[SUSPEND_PAGE + 1])

    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
    with _calls(client, between) as calls:
        assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    assert [name for name, _ in calls] == ["await_children"] * 4 + ["suspend_run"]
    assert raw.scard(client.keys.run_awaits(parent)) == n - 4
    woken_at: list[int] = []
    for i in range(n - 4):
        assert status_of(raw, client, parent) == "suspended", f"woken after {i} finishes"
        child = claim_one(client, "c")
        output = f'"out-{child.id}"'.encode()
        assert client.scripts.finalize(child.id, child.token, "succeeded", output)
        if status_of(raw, client, parent) != "suspended":
            woken_at.append(i)
    assert woken_at == [n - 5]  # at the last finish, once
    assert status_of(raw, client, parent) == "queued"
    assert not raw.exists(client.keys.run_awaits(parent))
    again = claim_one(client, "p")
    assert again.id == parent
    pipe = raw.pipeline(transaction=False)
    for kid in kids:
        pipe.hmget(client.keys.run(kid), "status", "outputJson")
    for kid, (status, output) in zip(kids, pipe.execute(), strict=True):
        assert (status, output) == (b"succeeded", f'"out-{kid}"'.encode())


@pytest.mark.parametrize("when", [0, 3])  # after page 1 | after the last page
def test_a_child_failing_between_pages_resumes_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str], when: int
) -> None:
    """A child registered by page 1 fails before the final check, while others
    still run: the run is not suspended (it executes again and its wait step
    fails), though the failed child is no longer in its awaited set."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 3 * SUSPEND_PAGE + 5
    kids = [enq(workflow="c", queue="c-x" if i == 7 else "c") for i in range(n)]

    def between(name: str, k: int) -> None:
        if k == when:
            _finish(client, "c-x", kids[7], "failed")

    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
    with _calls(client, between):
        assert client.scripts.suspend(parent, run.token, wait) == "resume"
    assert status_of(raw, client, parent) == "running"
    # the same lease suspends again (the replay would fail the step instead):
    # the failed child is read by its page, nothing is suspended
    assert client.scripts.suspend(parent, run.token, wait) == "resume"


def test_a_paged_suspend_abandoned_between_pages_leaves_nothing_that_wakes_the_run(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A registration abandoned between pages (the lease lost after page 1) leaves
    page 1's entries behind: they neither wake the run once it suspends on
    something else, nor keep that suspension or a resend of it from working."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]
    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)

    def lose_lease(name: str, k: int) -> None:
        if k == 0:  # after page 1: the lease goes (as the reaper would take it)
            raw.zrem(client.keys.leases, parent)

    with _calls(client, lose_lease):
        assert client.scripts.suspend(parent, run.token, wait) == "lease-lost"
    assert raw.scard(client.keys.run_awaits(parent)) == SUSPEND_PAGE  # page 1's
    raw.zadd(client.keys.leases, {parent: 2**40})  # held again (as after a new claim)
    other = enq(workflow="c", queue="o")
    alone = RunWait(steps=["one"], kinds=["children"], children=[other])
    assert client.scripts.suspend(parent, run.token, alone) == "suspended"
    assert client.scripts.suspend(parent, run.token, alone) == "suspended"  # resent
    for _ in range(SUSPEND_PAGE + 1):  # page 1's children and more, failed too
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "failed", _FAILED)
        assert status_of(raw, client, parent) == "suspended"
    _finish(client, "o", other)
    assert status_of(raw, client, parent) == "queued"


def test_a_paged_suspend_sent_again_after_a_lost_reply_says_what_it_applied(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Sent again from its first page, a paged suspend already applied changes
    nothing and says so; the run wakes at its last child's finish."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]
    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
    assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    with _calls(client) as calls:
        assert client.scripts.suspend(parent, run.token, wait) == "suspended"
    assert [name for name, _ in calls] == ["await_children"]  # its first page said so
    assert raw.scard(client.keys.run_awaits(parent)) == n
    for i in range(n):
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "succeeded", b"1")
        assert status_of(raw, client, parent) == ("queued" if i == n - 1 else "suspended")


def test_a_cancel_between_pages_ends_the_run_canceled_and_drops_its_awaited_set(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A cancel requested while the run registers its wait: the final check ends
    it canceled and removes the awaited set the pages built; the children's
    finishes then find nothing to wake or mark."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    n = 2 * SUSPEND_PAGE + 1
    kids = [enq(workflow="c", queue="c") for _ in range(n)]
    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)

    def cancel(name: str, k: int) -> None:
        if k == 0:
            assert client.cancel_run(parent)

    with _calls(client, cancel):
        assert client.scripts.suspend(parent, run.token, wait) == "canceled"
    assert status_of(raw, client, parent) == "canceled"
    assert not raw.exists(client.keys.run_awaits(parent))
    for _ in range(3):
        kid = claim_one(client, "c")
        assert client.scripts.finalize(kid.id, kid.token, "failed", _FAILED)
    assert status_of(raw, client, parent) == "canceled"
    assert raw.hget(client.keys.run(parent), "awaitFailed") is None


@pytest.mark.parametrize("last", ["succeeded", "failed"])
def test_children_in_another_shard_kicked_between_pages(
    raw: redis.Redis, redis_url: str, prefix: str, last: str
) -> None:
    """shards > 1: children in another shard are read through the kicks of their
    finishes. One kicked after its page leaves the awaited set (the parent runs:
    the kick used to record it only), one kicked before its page is not added; the
    run suspends with a recheck timer and wakes at the last kick. A failed one
    kicked between pages resumes the run instead."""
    sc = create_client(redis_url, prefix=prefix, default=False, shards=3)
    try:
        pshard = sc.shards[0]
        parent = enq_on(pshard, "p")
        _, run = pshard.scripts.claim(("p",), 60_000, new_token())
        assert run is not None and run.id == parent
        n = 2 * SUSPEND_PAGE + 1
        kids = [run_id_for_shard(new_run_id(), 1, 3) for _ in range(n)]

        def kick(name: str, k: int) -> None:
            if k == 0:  # one of page 1 (registered), one of page 3 (not yet)
                assert xshard.kick(sc, parent, kids[3], last) is False
                assert xshard.kick(sc, parent, kids[n - 1], "succeeded") is False

        wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
        with _calls(pshard, kick):
            got = pshard.scripts.suspend(parent, run.token, wait)
        if last == "failed":
            assert got == "resume"
            return
        assert got == "suspended"
        awaits = pshard.keys.run_awaits(parent)
        assert raw.scard(awaits) == n - 2
        due = raw.zscore(pshard.keys.timers, parent)
        assert due is not None and due > sc.server_time_ms() + 20_000  # the recheck
        left = [k for i, k in enumerate(kids) if i not in (3, n - 1)]
        for i, kid in enumerate(left):
            assert xshard.kick(sc, parent, kid, "succeeded") is (i == len(left) - 1)
        assert text(raw.hget(pshard.keys.run(parent), "status") or b"") == "queued"
    finally:
        sc.close()


def test_each_page_keeps_the_lease_running(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """The handler's heartbeat ended with it: each page makes the lease run the
    worker's lease length from then on (never shorter), so a registration of
    many pages on a loaded Redis is not put back by the reaper midway."""
    parent = enq(workflow="p", queue="p")
    run = claim_one(client, "p")
    kids = [enq(workflow="c", queue="c") for _ in range(2 * SUSPEND_PAGE + 1)]
    seen: list[float] = []

    def expire_soon(name: str, k: int) -> None:
        if name == "await_children":
            seen.append(float(raw.zscore(client.keys.leases, parent) or 0))
            raw.zadd(client.keys.leases, {parent: client.server_time_ms() + 50})

    wait = RunWait(steps=["fan"], kinds=["children"], children=kids)
    with _calls(client, expire_soon):
        assert client.scripts.suspend(parent, run.token, wait, 5_000) == "suspended"
    now = client.server_time_ms()
    assert len(seen) == 3 and all(s > now + 2_000 for s in seen), (seen, now)
