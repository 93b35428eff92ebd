"""Rate limits under real supervisors (issue 15 #3): 300 runs of a workflow limited
to ``"100/s"``, served by two supervisors of two processes each, take 2 s and a
little more from the first start to the last finish (each start exactly one
period after the 100th before it, on Redis's clock); no window of one second
holds more than 100 starts, and no run was spun on (the rate gate ran once per run; 200 runs
waited in ``scheduled`` once each)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry
from tests.helpers import texts
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def test_three_hundred_runs_under_100_per_second_take_two_to_three_seconds(
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
    handles = [client.run_by_name("rate-job", {"n": i}) for i in range(300)]
    ledger = f"{tag}:ledger:rate"
    wait_until(lambda: raw.llen(ledger) >= 300, 30, message="300 runs done")
    spans = [tuple(float(x) for x in line.split()) for line in texts(raw.lrange(ledger, 0, -1))]
    assert len(spans) == 300
    first_start = min(s for s, _ in spans)
    last_finish = max(f for _, f in spans)
    took = last_finish - first_start
    print(f"300 runs under 100/s: {took:.3f} s from the first start to the last finish")
    # never early: waves of at most 100 per second, one second apart
    starts = sorted(s - first_start for s, _ in spans)
    assert starts[100] >= 0.95 and starts[200] >= 1.95, starts[95:105]
    assert took >= 2.0, took
    states = [h.state() for h in handles]
    for state in states:
        assert state is not None and state.status == "succeeded" and len(state.attempts) == 1
    # never held back more than the limit asks: each start (the claim's, on Redis's
    # clock) or reserved start of a waiting run is exactly one period after the
    # 100th before it (the first 100 started at once: the 200 others waited, below).
    # These are the limiter's own times, which a loaded machine does not stretch.
    slots = sorted(
        s.available_at if s.available_at and s.available_at > s.created_at else s.started_at or 0
        for s in states
        if s is not None
    )
    assert [slots[i + 100] - slots[i] for i in range(200)] == [1000] * 200, slots
    # The actual starts follow the reservations by the promoter's lag (its 0.2 s
    # tick) plus a free worker's claim, and the last wave then takes its time to
    # run: 2.4 to 2.7 s here under load, against the 3.1 s this bound was (the
    # drain of a wave is the machine's speed); the exact check above proves the
    # pacing, this one that the runs were not left waiting past their starts.
    assert took <= 4.5, took
    # no spinning: the rate gate ran once per run (ZREMRANGEBYSCORE is its first
    # command, and no other script sends it); 200 runs waited in `scheduled` once
    stats = raw.info("commandstats")
    assert stats["cmdstat_zremrangebyscore"]["calls"] == 300, stats.get("cmdstat_zremrangebyscore")
    deferred = [s for s in states if s is not None and (s.available_at or 0) > s.created_at]
    assert len(deferred) == 200
