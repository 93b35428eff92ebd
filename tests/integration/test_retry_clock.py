"""Scheduled runs after the Redis clock went back (NTP setting right a clock that
ran ahead, a failover to a server whose clock is behind). A retry scheduled while
the clock was a day ahead holds times from that clock: its due time (its score in
its queue's scheduled set, `availableAt`, its queue's due-queues score) and the
time it was scheduled (its runs:status:scheduled score, `updatedAt`). The tests
write those as such a retry left them (the clock is faked the way
tests/integration/test_cron_clock.py fakes it)."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, define_workflow
from redflow_mp.codec import text
from redflow_mp.ids import new_token
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


def _status(client: Client, run_id: str) -> str | None:
    state = client.get_run(run_id)
    return None if state is None else state.status.value


def _as_if_ahead(raw: redis.Redis, client: Client, run_id: str, by_ms: int) -> None:
    """Rewrite the scheduled run ``run_id``'s times as a retry at a Redis clock
    ``by_ms`` ahead left them."""
    k = client.keys
    queue = text(raw.hget(k.run(run_id), "queue") or b"")
    due = raw.zscore(k.q_scheduled(queue), run_id)
    at = raw.zscore(k.runs_status("scheduled"), run_id)
    updated = int(raw.hget(k.run(run_id), "updatedAt") or 0)
    assert due is not None and at is not None
    with raw.pipeline(transaction=True) as pipe:  # long before the retry is due
        pipe.zadd(k.q_scheduled(queue), {run_id: int(due) + by_ms}, xx=True)
        pipe.zadd(k.due_queues, {queue: int(due) + by_ms})
        pipe.zadd(k.runs_status("scheduled"), {run_id: int(at) + by_ms}, xx=True)
        pipe.hset(
            k.run(run_id),
            mapping={"availableAt": int(due) + by_ms, "updatedAt": updated + by_ms},
        )
        pipe.execute()


def test_a_retry_scheduled_at_a_clock_a_day_ahead_runs_its_backoff_after_the_clock_went_back(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A run that failed while the Redis clock was a day ahead was scheduled to
    retry a day and its backoff away once the clock was set right. Now its retry
    starts at most its backoff (and the promoter's slack) after the clock went
    back, and not before its backoff."""
    failed_at: list[float] = []
    started_at: list[float] = []

    @define_workflow(
        "clock-retry",
        retries=Retries(max_attempts=2, initial_delay=3, jitter=0),
        registry=registry,
    )
    def flaky(ctx: Context[Any]) -> str:
        if ctx.run.attempt == 1:
            failed_at.append(time.monotonic())
            raise ValueError("first")
        started_at.append(time.monotonic())
        return "second"

    workers.start()
    handle = flaky.run()
    wait_until(lambda: _status(client, handle.id) == "scheduled", timeout=10)
    _as_if_ahead(raw, client, handle.id, DAY_MS)
    assert _status(client, handle.id) == "scheduled"  # rewritten before it was due
    rewritten = time.monotonic()
    deadline = rewritten + 12
    while time.monotonic() < deadline and _status(client, handle.id) != "succeeded":
        time.sleep(0.05)
    due = int(raw.hget(client.keys.run(handle.id), "availableAt") or 0)
    assert _status(client, handle.id) == "succeeded", (
        f"still {_status(client, handle.id)} 12 s after the clock went back: due "
        f"{(due - client.server_time_ms()) / 1000:.0f} s from now"
    )
    assert handle.result(timeout=1) == "second"
    assert started_at[0] - failed_at[0] >= 3.0  # never before its backoff
    assert started_at[0] - rewritten <= 3.0 + 4.0


def test_a_run_at_given_at_a_clock_ahead_keeps_the_users_time(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A run enqueued with ``run_at`` while the clock was a day ahead is due at the
    user's time, not one the clock made: the promoter's re-base leaves it."""

    @define_workflow("clock-later", registry=registry)
    def later(ctx: Context[Any]) -> str:
        return "done"

    k = client.keys
    run_at_ms = client.server_time_ms() + 2 * DAY_MS
    handle = later.run(run_at=run_at_ms / 1000)
    created = raw.zscore(k.runs_status("scheduled"), handle.id)
    assert created is not None
    raw.zadd(k.runs_status("scheduled"), {handle.id: int(created) + DAY_MS}, xx=True)
    workers.start()
    # looked at by the promoter (its index entry is scored now), left as it was
    wait_until(
        lambda: (raw.zscore(k.runs_status("scheduled"), handle.id) or 0) < created + DAY_MS,
        timeout=10,
    )
    assert raw.zscore(k.q_scheduled("default"), handle.id) == run_at_ms
    assert int(raw.hget(k.run(handle.id), "availableAt") or 0) == run_at_ms
    assert _status(client, handle.id) == "scheduled"


def test_a_rate_reservation_made_at_a_clock_a_day_ahead_starts_its_delay_after_the_clock_went_back(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """A "1/s" workflow: the run after a start was reserved a second later, while
    the Redis clock was a day ahead; once the clock was set right its reservation
    lay a day away. Now it starts about its second after the clock went back, not
    before a second after the start it waited for."""

    @define_workflow("clock-paced", rate_limit="1/s", registry=registry)
    def paced(ctx: Context[Any]) -> str:
        return "paced"

    client.sync_registry(registry, app="test")
    k = client.keys
    first, second = paced.run(), paced.run()
    token = new_token()
    _, got = client.scripts.claim(("default",), 5000, token)
    assert got is not None and got.id == first.id
    assert client.scripts.finalize(first.id, token, "succeeded", b'"paced"') == "succeeded"
    _, got = client.scripts.claim(("default",), 5000, new_token())
    assert got is None and _status(client, second.id) == "scheduled"  # reserved
    first_start = int(raw.hget(k.run(first.id), "startedAt") or 0)
    slot = int(raw.hget(k.run(second.id), "rateSlot") or 0)
    assert slot >= first_start + 1000
    # as at a clock a day ahead: the first start, in both logs, and the reservation
    plan, started = f"{k.tag}:rate:clock-paced", f"{k.tag}:rate-started:clock-paced"
    entries: dict[str, list[tuple[bytes, float]]] = {
        key: cast(list[tuple[bytes, float]], raw.zrange(key, 0, -1, withscores=True))
        for key in (plan, started)
    }
    with raw.pipeline(transaction=True) as pipe:
        for key, members in entries.items():
            pipe.delete(key)
            for member, score in members:
                pipe.zadd(key, {member: int(score) + DAY_MS})
        pipe.hset(k.run(second.id), "rateSlot", slot + DAY_MS)
        pipe.execute()
    _as_if_ahead(raw, client, second.id, DAY_MS)
    workers.start()
    rewritten = time.monotonic()
    deadline = rewritten + 12
    while time.monotonic() < deadline and _status(client, second.id) != "succeeded":
        time.sleep(0.05)
    due = int(raw.hget(k.run(second.id), "availableAt") or 0)
    assert _status(client, second.id) == "succeeded", (
        f"still {_status(client, second.id)} 12 s after the clock went back: due "
        f"{(due - client.server_time_ms()) / 1000:.0f} s from now"
    )
    assert time.monotonic() - rewritten <= 1.0 + 4.0
    # never over the limit: a second after the first start, on Redis's clock
    assert int(raw.hget(k.run(second.id), "startedAt") or 0) - first_start >= 1000


def test_a_defer_at_a_clock_a_day_ahead_is_rebased_on_its_delay(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A run put back for another supervisor (``defer``, a worker that does not load
    its workflow) while the clock was a day ahead: the promoter's next call makes
    it due its delay from the clock now."""

    @define_workflow("clock-foreign", registry=registry)
    def foreign(ctx: Context[Any]) -> None:
        return None

    k = client.keys
    handle = foreign.run()
    token = new_token()
    _, got = client.scripts.claim(("default",), 5000, token)
    assert got is not None and got.id == handle.id
    assert client.scripts.finalize(handle.id, token, "defer", b"", 3000) == "scheduled"
    _as_if_ahead(raw, client, handle.id, DAY_MS)
    before = client.server_time_ms()
    client.scripts.promote(100)
    after = client.server_time_ms()
    due = raw.zscore(k.q_scheduled("default"), handle.id)
    assert due is not None and before + 3000 <= due <= after + 3000, (
        f"due {(int(due or 0) - after) / 1000:.0f} s from now"
    )
    assert int(raw.hget(k.run(handle.id), "availableAt") or 0) == due
    assert (raw.zscore(k.due_queues, "default") or 0) <= due


def test_a_run_parked_at_a_clock_a_day_ahead_is_released_in_its_turn(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """``max_concurrency=1``: a run parked while the clock was a day ahead sat behind
    every run parked since (its place is its band plus its time), so a workflow
    always at its limit released it a day late. Now the promoter places it at the
    clock now: released before the runs parked after that (the runs parked since
    the clock went back, a promoter's tick of them at most, come first)."""
    gate = threading.Event()
    order: list[int] = []

    @define_workflow("clock-one", registry=registry)
    def one(ctx: Context[Any]) -> int:
        n = int(ctx.input["n"])
        order.append(n)
        if n == 0:
            gate.wait(20)
        return n

    k = client.keys
    waiting = k.wf_waiting("clock-one")
    workers.start()
    workers.start()
    first = one.run({"n": 0})
    wait_until(lambda: order == [0], timeout=10)
    parked = one.run({"n": 1})
    wait_until(lambda: raw.zscore(waiting, parked.id) is not None, timeout=10)
    place = raw.zscore(waiting, parked.id)
    at = raw.zscore(k.runs_status("queued"), parked.id)
    assert place is not None and at is not None
    with raw.pipeline(transaction=True) as pipe:  # as parked at a clock a day ahead
        pipe.zadd(waiting, {parked.id: int(place) + DAY_MS}, xx=True)
        pipe.zadd(k.runs_status("queued"), {parked.id: int(at) + DAY_MS}, xx=True)
        pipe.execute()
    client.scripts.promote(100)  # the promoter's tick after the clock went back
    later = [one.run({"n": n}) for n in (2, 3)]
    wait_until(lambda: all(raw.zscore(waiting, h.id) is not None for h in later), timeout=10)
    gate.set()
    for h in (first, parked, *later):
        h.result(timeout=20)
    assert order == [0, 1, 2, 3], f"released in the order {order}"


def test_a_run_queued_at_a_clock_a_day_ahead_is_claimed_in_its_turn(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A run queued while the clock was a day ahead sat in its ready set behind
    every run queued since: on a queue that never empties, a day. Now the
    promoter places it at the clock now, before the runs queued after."""

    @define_workflow("clock-queued", max_concurrency=3, registry=registry)
    def queued(ctx: Context[Any]) -> None:
        return None

    k = client.keys
    early = queued.run()
    place = raw.zscore(k.q_ready("default"), early.id)
    at = raw.zscore(k.runs_status("queued"), early.id)
    assert place is not None and at is not None
    raw.zadd(k.q_ready("default"), {early.id: int(place) + DAY_MS}, xx=True)
    raw.zadd(k.runs_status("queued"), {early.id: int(at) + DAY_MS}, xx=True)
    client.scripts.promote(100)  # the promoter's tick after the clock went back
    later = [queued.run() for _ in range(2)]
    claimed = []
    for _ in range(3):
        _, got = client.scripts.claim(("default",), 5000, new_token())
        assert got is not None
        claimed.append(got.id)
    assert claimed == [early.id, *(h.id for h in later)], (
        f"the run queued at the clock ahead was claimed {claimed.index(early.id) + 1}th of 3"
    )
