"""The async client on a Redis Cluster whose prefix slot moves to another master
(``tests/cluster/test_connection.py`` has the sync side): its command connection,
its redis.asyncio queries and its pub/sub waiters follow MOVED; nothing is lost."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from redis.crc import key_slot

from redflow_mp import Registry, RunCanceledError, Worker, create_client, define_workflow
from redflow_mp.aio import create_async_client
from tests.cluster.test_connection import _migrate_slot
from tests.conftest import prefix_off_node
from tests.servers import Cluster


@pytest.mark.timeout(180)
def test_the_async_client_follows_a_reshard_of_the_prefix_slot(
    redis_cluster: Cluster, registry: Registry
) -> None:
    cluster = redis_cluster
    prefix = prefix_off_node(cluster, f"areshard-{os.getpid()}", cluster.nodes[0].port)
    slot = key_slot(f"{{{prefix}}}".encode())

    @define_workflow("double", queue="acl", registry=registry)
    def double(ctx: Any) -> int:
        return int(ctx.input) * 2

    sync = create_client(cluster.url, prefix=prefix, registry=registry, default=False)
    sync.sync_registry(registry, app="t")
    target = next(n for n in cluster.masters if n.port != cluster.node_for_slot(slot).port)
    worker = Worker(sync, registry=registry, block_timeout=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    async def main() -> None:
        ac = create_async_client(cluster.url, prefix=prefix, registry=registry, default=False)
        try:
            first = [await double.arun(i, client=ac) for i in range(20)]
            assert [await h.result(timeout=30) for h in first] == [2 * i for i in range(20)]
            parked = await double.arun(7, client=ac, run_at=4_000_000_000)
            waiting = asyncio.ensure_future(parked.result(timeout=60))
            await asyncio.to_thread(_migrate_slot, cluster, slot, target.port)
            second = [await double.arun(i, client=ac) for i in range(20)]
            assert [await h.result(timeout=30) for h in second] == [2 * i for i in range(20)]
            for h in first + second:
                state = await ac.get_run(h.id)
                assert state is not None and state.status == "succeeded", h.id
            assert len(await ac.list_runs(limit=100)) == 41
            assert await parked.cancel()
            with pytest.raises(RunCanceledError):
                await waiting
            assert f"127.0.0.1:{target.port}" in ac.transport.describe()
        finally:
            await ac.aclose()

    try:
        asyncio.run(main())
    finally:
        worker.stop()
        thread.join(10)
        sync.close()
