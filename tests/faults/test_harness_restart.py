"""The fault harness's Redis restart (``restart_redis``) of a server whose dataset
loads for longer than ``RedisServer``'s 10 s wait for PING. The soak at scale
restarts an AOF of 100,000 runs; on a loaded machine its load took longer than
that, the start was taken for failed, and the server was started again on
ANOTHER port: every supervisor kept calling the old one (connection refused)
until the case failed, as if the product had not recovered. A server answering
LOADING is up; a restart keeps its port. Plain test run: one real redis-server
slowed down with its own ``key-load-delay``, no supervisor."""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import Faults
from tests.faults.processes import restart_redis

pytestmark = pytest.mark.timeout(120)

#: Keys in the snapshot, and the load delay per key (us): a 12 s load, past 10 s.
KEYS = 200
DELAY_US = 60_000


def test_a_restart_whose_load_outlasts_the_ping_wait_keeps_the_port(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    with raw.pipeline(transaction=False) as pipe:
        for i in range(KEYS):
            pipe.set(f"k{i}", "v" * 2000)
        pipe.execute()
    raw.save()
    raw.close()
    url, port = server.url, server.port
    # a slow load that answers LOADING meanwhile (events every KiB read), as a big
    # AOF does (every 2 MiB by default)
    server.extra_args += ["--key-load-delay", str(DELAY_US)]
    server.extra_args += ["--loading-process-events-interval-bytes", "1024"]
    t = time.monotonic()
    restart_redis(server, 0.2)
    took = time.monotonic() - t
    assert (server.url, server.port) == (url, port), (
        f"the restarted server moved from {url} to {server.url} (started in {took:.1f} s): "
        "every client of the old URL is cut off for good"
    )
    raw = server.client()
    assert raw.dbsize() == KEYS  # the data dir's snapshot, loaded
    assert took >= KEYS * DELAY_US / 1e6 * 0.8, f"the load took {took:.1f} s: not slowed"
    raw.close()
