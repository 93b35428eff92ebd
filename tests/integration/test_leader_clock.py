"""The cron leader lock after the Redis clock went back (NTP setting right a clock
that ran ahead, a failover to a server whose clock is behind). Redis expires a key
at an absolute time on its own clock (and sends that time to its replicas): a lock
set or renewed while the clock was a day ahead expires a day late. The tests write
the lock's expiry as such a renewal left it (the clock is faked the way
tests/integration/test_cron_clock.py fakes it)."""

from __future__ import annotations

import time

import pytest
import redis

from redflow_mp import Client
from redflow_mp.leaderlock import LeaderLock

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000
TTL_MS = 10_000  # the default cron_lock_ttl_ms


def _lead_within(lock: LeaderLock, seconds: float) -> float | None:
    """The leader duty of a supervisor at its defaults (a tick every ttl/3) for up
    to ``seconds``: how long until ``lock`` leads (None: it did not)."""
    begun = time.monotonic()
    while time.monotonic() - begun < seconds:
        if lock.tick():
            return time.monotonic() - begun
        time.sleep(TTL_MS / 3000)
    return None


def test_a_dead_leaders_lock_renewed_at_a_clock_a_day_ahead_is_taken_over_within_its_ttl(
    raw: redis.Redis, client: Client
) -> None:
    """The leader (its whole supervisor) died after a renewal at a clock a day
    ahead: no supervisor could lead, and no cron fired, for a day. Now a contender
    moves a lock expiring further ahead than its holder's TTL to that TTL from now,
    and leads once it lapses."""
    key = client.keys.lock_cron
    gone = LeaderLock(client, TTL_MS)
    assert gone.tick()
    raw.pexpireat(key, client.server_time_ms() + DAY_MS + TTL_MS)  # its last renewal
    contender = LeaderLock(client, TTL_MS)
    took = _lead_within(contender, TTL_MS / 1000 + 6)
    assert took is not None, (
        f"no leader: the gone leader's lock expires in {raw.pttl(key) / 1000:.0f} s"
    )
    assert took >= TTL_MS / 1000 - 1  # the holder's TTL from when it was seen
    assert raw.get(key) == contender.token.encode()


def test_a_live_leaders_longer_ttl_is_left_alone(raw: redis.Redis, client: Client) -> None:
    """A supervisor with cron_lock_ttl_ms 2 minutes leads a prefix shared with
    supervisors of the default 10 s: its lock lies further ahead than theirs and
    stays; so does a lock whose token names no TTL (an older version's) within a
    minute of the contender's."""
    key = client.keys.lock_cron
    leader = LeaderLock(client, 120_000)
    assert leader.tick()
    contender = LeaderLock(client, TTL_MS)
    assert not contender.tick()
    assert raw.pttl(key) > 100_000
    assert leader.tick() and raw.get(key) == leader.token.encode()
    raw.set(key, "an-older-leader", px=65_000)
    assert not contender.tick()
    assert raw.pttl(key) > 60_000
