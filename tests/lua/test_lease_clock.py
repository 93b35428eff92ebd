"""Leases after the Redis clock went back (NTP setting right a clock that ran
ahead, a failover to a server whose clock is behind): a lease renewed while the
clock was a day ahead expires a day late. The clock is faked as in
tests/integration/test_cron_clock.py: the lease entry is written as such a
renewal left it."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.ids import new_token
from redflow_mp.maintenance import StallGuard, reap_expired
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000
LEASE_MS = 5000  # the default lease_ms
REAPER_MS = 500  # the default reaper_interval_ms


def _reap_until_requeued(client: Client, run_id: str, seconds: float) -> float | None:
    """The supervisor's reaper at its default settings, a tick every 500 ms, for up
    to ``seconds``: how long until it put ``run_id`` back (None: it did not)."""
    guard = StallGuard(LEASE_MS, REAPER_MS)
    begun = time.monotonic()
    while time.monotonic() - begun < seconds:
        if run_id in reap_expired(client, guard=guard)[1]:
            return time.monotonic() - begun
        time.sleep(REAPER_MS / 1000)
    return None


def test_a_dead_holders_lease_renewed_at_a_clock_a_day_ahead_is_reaped_within_a_lease(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """Its holder (its whole supervisor) died after a renewal at a clock a day
    ahead: its run waited a day to be put back. Now the reaper moves a lease
    entry further ahead than its run's lease (and a minute) to a lease from now."""
    k = client.keys
    rid = enq()
    _, got = client.scripts.claim(("q",), LEASE_MS, new_token())
    assert got is not None and got.id == rid
    raw.zadd(k.leases, {rid: client.server_time_ms() + DAY_MS + LEASE_MS}, xx=True)
    took = _reap_until_requeued(client, rid, LEASE_MS / 1000 + 5)
    expiry = raw.zscore(k.leases, rid)
    assert took is not None, (
        f"not requeued: its lease expires {((expiry or 0) - client.server_time_ms()) / 1000:.0f} "
        "s from now"
    )
    assert took >= LEASE_MS / 1000 - 0.5  # a lease from when the reaper saw it
    assert status_of(raw, client, rid) == "queued"


def test_a_live_holders_longer_lease_is_left_alone(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A supervisor with lease_ms 10 minutes shares the prefix with reapers of the
    default 5 s: its leases lie further ahead than theirs, and they stay."""
    k = client.keys
    rid = enq()
    long_lease = 600_000
    _, got = client.scripts.claim(("q",), long_lease, new_token())
    assert got is not None and got.id == rid
    expiry = raw.zscore(k.leases, rid)
    assert reap_expired(client, guard=StallGuard(LEASE_MS, REAPER_MS))[1] == []
    assert raw.zscore(k.leases, rid) == expiry
    assert status_of(raw, client, rid) == "running"
