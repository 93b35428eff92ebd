"""Rate limits under real supervisors (issue 15 #3): 300 runs of a workflow limited
to ``"100/s"``, served by two supervisors of two processes each: no window of
one second holds more than 100 actual starts (startedAt, on Redis's clock), the
last finish is at least 2 s after the first start, and no run was spun on (the
rate gate ran once per run, and at most twice more for each of the 200 runs that
waited in ``scheduled``). And 600 runs under default settings: the busiest sliding
second of actual starts holds at most 100.

How long they take is printed, not bounded: 2.3-3 s for the 300 on a quiet
machine, 4.5 s and more beside a test suite (load 16 on 2 cores), where the workers
themselves, not the limit, set the pace; what the limit promises (never early, no
spinning) is counted on Redis's clock and in commands."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry
from tests.helpers import texts
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def test_three_hundred_runs_under_100_per_second_are_paced_by_the_limit(
    supervisor: Callable[..., Supervisor],
    make_client: Callable[..., Client],
    raw: redis.Redis,
) -> None:
    raw.config_resetstat()
    sups = [supervisor(procs=2, modules=["tests.process.flows_rate"]) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    client = make_client(registry=Registry())  # like another application
    tag = client.keys.tag
    meta = wait_until(lambda: client.get_workflow_meta("rate-job"), message="metadata synced")
    assert meta.rate_limit == "100/s"
    # one batch: all 300 ready at once (one by one, a loaded machine took seconds
    # to enqueue them, and runs that came late started without waiting)
    handles = client.run_many_by_name("rate-job", [{"n": i} for i in range(300)])
    ledger = f"{tag}:ledger:rate"
    wait_until(lambda: raw.llen(ledger) >= 300, 90, message="300 runs done")
    spans = [tuple(float(x) for x in line.split()) for line in texts(raw.lrange(ledger, 0, -1))]
    assert len(spans) == 300
    first_start = min(s for s, _ in spans)
    last_finish = max(f for _, f in spans)
    took = last_finish - first_start
    print(f"300 runs under 100/s: {took:.3f} s from the first start to the last finish")
    for h in handles:  # the ledger line is written before the run's finish
        h.result(timeout=10)
    states = [h.state() for h in handles]
    for state in states:
        assert state is not None and state.status == "succeeded" and len(state.attempts) == 1
    # never early: never more than the limit in any window of one period, on
    # Redis's clock (startedAt, written by the claim that started the run): each
    # start is at least one period after the 100th before it. (Not on the
    # handlers' clock: a claim's reply reaches its process after a varying delay,
    # so the handlers' own start times may see 101 within 0.92 s.)
    started = sorted(s.started_at or 0 for s in states if s is not None)
    assert all(started[i + 100] - started[i] >= 1000 for i in range(200)), started
    assert max(s.finished_at or 0 for s in states if s is not None) - started[0] >= 2000
    # The actual starts follow the reservations by the promoter's lag (its 0.2 s
    # tick) plus a free worker's claim (twice for a run that came back to a full
    # window and reserved again), then the last wave runs: 2.7 to 2.8 s here under
    # load, 4.54 s once beside a test suite (load 16 on 2 cores): not bounded (a
    # loaded machine's workers set that pace; the limit's promises, never early and
    # no spinning, are checked above and below).
    # no spinning: the rate gate (two ZREMRANGEBYSCORE, its trims of the two logs;
    # no other script sends it) ran once per run, and for each run that waited in
    # `scheduled` once more when it came back, and on average at most once again (a
    # late one that found the window of actual starts full reserved again, near its
    # old place). At most 200 waited: 100 fit the first second. How many fewer
    # depends on the machine: 190-200 on a quiet one, 85 in a CI run at load 20,
    # where four busy workers claimed the first runs over two seconds, about as
    # fast as the limit, and few found a full window (the pacing above held).
    deferred = [s for s in states if s is not None and (s.available_at or 0) > s.created_at]
    assert len(deferred) <= 200
    stats = raw.info("commandstats")
    gates = stats["cmdstat_zremrangebyscore"]["calls"] // 2
    print(f"rate gate: {gates} calls for 300 runs, {len(deferred)} waited")
    assert 300 + len(deferred) <= gates <= 300 + 2 * len(deferred), gates


def _busiest_window(starts_ms: list[int], period_ms: int) -> int:
    """The most starts in any sliding window [t, t + period) (one opens at each start)."""
    starts = sorted(starts_ms)
    return max(bisect.bisect_left(starts, s + period_ms) - i for i, s in enumerate(starts))


def test_actual_starts_stay_under_the_limit_in_every_sliding_second(
    supervisor: Callable[..., Supervisor],
    make_client: Callable[..., Client],
    raw: redis.Redis,
) -> None:
    # 600 runs under "100/s", two supervisors of two processes, default settings.
    # The limit is about when runs actually start (startedAt, written by the claim
    # that starts them), not when they were planned to: reserved runs come back
    # late (the promoter's tick, busy workers) and used to start on their old
    # reservations without a new check, 108-137 in the busiest second.
    sups = [supervisor(procs=2, modules=["tests.process.flows_rate"]) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    client = make_client(registry=Registry())
    tag = client.keys.tag
    wait_until(lambda: client.get_workflow_meta("rate-job"), message="metadata synced")
    handles = client.run_many_by_name("rate-job", [{"n": i} for i in range(600)])
    ledger = f"{tag}:ledger:rate"
    wait_until(lambda: raw.llen(ledger) >= 600, 90, message="600 runs done")
    for h in handles:  # the ledger line is written before the run's finish
        h.result(timeout=10)
    states = [h.state() for h in handles]
    starts_ms = [s.started_at for s in states if s is not None and s.started_at is not None]
    assert len(starts_ms) == 600
    busiest = _busiest_window(starts_ms, 1000)
    took = (max(starts_ms) - min(starts_ms)) / 1000
    print(f"600 runs under 100/s: busiest sliding second {busiest} starts; {took:.3f} s")
    assert busiest <= 100
    # and the backlog drains at close to the limit: 5 periods after the first 100
    # starts at best (5.7-6.3 s measured here; printed, not bounded: a loaded
    # machine's workers set the pace); never faster than the limit
    assert took >= 5.0, took
