"""``durability_wait_ms`` longer than the socket timeout, with no replica confirming.

A master and a replica (real servers), the replica SIGSTOPped: a durable write's
``WAIT`` then answers 0 after ``durability_wait_ms``. With 6,000 ms (more than
``transport.SOCKET_TIMEOUT``) the write must fail with ``NotReplicatedError``
after those 6 s, sync and async: the transport does not resend a write whose
WAIT answered, nor does the enqueue (it resends itself once after a network
error, never after NotReplicatedError: that only waited for the same replica
again), so it takes one wait.
Before the fix the read of the ``WAIT`` reply timed out at 5 s: redis-py's
``TimeoutError: Timeout reading from ...``, the async client's likewise.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from redflow_mp import NotReplicatedError, Registry
from redflow_mp.transport import SOCKET_TIMEOUT, Transport
from tests.cluster.durable import durable_async_client, durable_client, run_count, trivial_flow
from tests.redis_server import RedisServer

WAIT_MS = 6000


def test_a_wait_longer_than_the_socket_timeout_ends_in_not_replicated(
    stalled_replica: RedisServer, prefix: str, registry: Registry
) -> None:
    assert WAIT_MS / 1000 > SOCKET_TIMEOUT

    durable_long = trivial_flow(registry, "durable_long")
    url = stalled_replica.url
    client = durable_client(url, prefix, registry, WAIT_MS)
    client.sync_registry(registry, app="t")
    started = time.monotonic()
    with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
        client.enqueue_workflow(durable_long, None)
    took = time.monotonic() - started
    assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + SOCKET_TIMEOUT, took  # one wait
    assert run_count(stalled_replica, prefix) == 1
    client.close()

    async def main() -> float:
        ac = durable_async_client(url, prefix, registry, WAIT_MS)
        try:
            began = time.monotonic()
            with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
                await ac.run_by_name("durable_long", None)
            return time.monotonic() - began
        finally:
            await ac.aclose()

    took = asyncio.run(main())
    assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + SOCKET_TIMEOUT, took  # one wait
    assert run_count(stalled_replica, prefix) == 2


def test_the_transport_reads_the_long_wait_once_and_stays_in_step(
    stalled_replica: RedisServer, prefix: str
) -> None:
    """The hot call (a worker's claim and finish, the supervisor's duties): a
    durable script call with ``retry=True`` is answered NotReplicatedError after
    one wait, not resent (applied once), and the connection serves the next call."""
    transport = Transport(stalled_replica.url, durability="wait", durability_wait_ms=WAIT_MS)
    key = f"{{{prefix}}}:counter"
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicatedError, match=rf"within {WAIT_MS} ms"):
            transport.call("EVAL", "return redis.call('INCR', KEYS[1])", 1, key, retry=True)
        took = time.monotonic() - started
        assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + SOCKET_TIMEOUT, took
        assert transport.call("GET", key) == b"1"  # once; the wire answers in step
    finally:
        transport.close()
