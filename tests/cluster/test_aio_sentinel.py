"""The async client through Sentinel under many concurrent queries: like the
plain URL's pool, the master's pool is bounded and blocking (a burst waits for a
free connection instead of failing with "Too many connections"), and it follows
a failover to the new master."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.aio_transport import MAX_CONNECTIONS
from tests.servers import SentinelSet


@pytest.mark.timeout(120)
def test_many_concurrent_queries_through_sentinel_wait_for_a_connection(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    @define_workflow("parked", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    assert sentinel_set.master is not None
    master = redis.Redis(host="127.0.0.1", port=sentinel_set.master.port)

    async def main() -> None:
        ac = create_async_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
        try:
            handle = await parked.arun(None, client=ac)
            states = await asyncio.gather(*(ac.get_run(handle.id) for _ in range(400)))
            assert all(s is not None and s.id == handle.id for s in states)
            assert int(master.info("clients")["connected_clients"]) <= MAX_CONNECTIONS + 10
            before = sentinel_set.master_port()
            sentinel_set.sentinels[0].call("SENTINEL", "FAILOVER", sentinel_set.service)
            after = next(s.port for s in sentinel_set.servers() if s.port != before)
            await asyncio.to_thread(sentinel_set.wait_agreed, after)
            states = await asyncio.gather(*(ac.get_run(handle.id) for _ in range(400)))
            assert all(s is not None and s.id == handle.id for s in states)
            assert await handle.cancel()  # a write, on the new master
        finally:
            await ac.aclose()

    try:
        asyncio.run(main())
    finally:
        master.close()
        # redis-py's Sentinel pool drops the connections it had to the old master
        # at a failover without closing them (known, not ours: aclose cannot reach
        # them); collected here so that their ResourceWarnings do not fail
        # whichever later test the garbage collector happens to run in.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
