"""Idempotency keys after the Redis clock went back (NTP setting right a clock that
ran ahead, a failover to a server whose clock is behind). A run enqueued while the
clock was a day ahead has a `createdAt` from that clock, and its key expired at
`createdAt` + its TTL once the run finished: a day late, and a new run with the
key was refused (the old one returned) for that day. The test writes the run's
`createdAt` as such an enqueue left it (the clock is faked the way
tests/integration/test_cron_clock.py fakes it)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(60)

DAY_MS = 86_400_000


def test_a_key_of_a_run_enqueued_at_a_clock_a_day_ahead_expires_its_ttl_after_the_finish(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("clock-keyed", registry=registry)
    def keyed(ctx: Context[Any]) -> str:
        return "ok"

    k = client.keys
    first = keyed.run(idempotency_key="once", idempotency_ttl=2)
    created = int(raw.hget(k.run(first.id), "createdAt") or 0)
    raw.hset(k.run(first.id), "createdAt", created + DAY_MS)  # enqueued a day ahead
    workers.start()
    assert first.result(timeout=10) == "ok"
    key = k.idempotency("clock-keyed", "once")
    assert raw.pttl(key) <= 2_000, (
        f"the key expires {raw.pttl(key) / 1000:.0f} s after the finish, its TTL is 2 s"
    )
    wait_until(lambda: not raw.exists(key), timeout=5, message="the key to expire")
    begun = time.monotonic()
    again = keyed.run(idempotency_key="once", idempotency_ttl=2)
    assert again.id != first.id  # a new run: the key expired
    assert again.result(timeout=10) == "ok"
    assert time.monotonic() - begun < 10
