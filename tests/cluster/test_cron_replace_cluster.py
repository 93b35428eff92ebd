"""A cron replaced by a registry sync on a cluster with shards: the swap
(``swap_crons.lua``, its TIME read in a pipeline) runs in the workflow's shard,
on the master of that shard's slot, and leaves one entry per cron."""

from __future__ import annotations

import os
from typing import Any

import pytest

from redflow_mp import Cron, Registry, create_client, define_workflow
from redflow_mp.cron import cron_id_for
from tests.servers import Cluster

from .test_shards import N, spread_prefix

pytestmark = pytest.mark.timeout(120)


def _handler(ctx: Any) -> None:
    return None


def test_a_cron_replaced_on_a_cluster_with_shards_leaves_one_entry_per_cron(
    redis_cluster: Cluster,
) -> None:
    prefix = spread_prefix(redis_cluster, f"cswap-{os.getpid()}-")
    client = create_client(redis_cluster.url, prefix=prefix, default=False, shards=N)
    try:
        names = [
            next(f"c{i}" for i in range(99) if client.shard_of_workflow(f"c{i}").index == k)
            for k in range(N)
        ]

        def registry(version: int) -> Registry:
            reg = Registry()
            for name in names:
                cron = Cron("0 0 1 1 *", input={"v": version})
                define_workflow(name, cron=[cron], registry=reg)(_handler)
            return reg

        client.sync_registry(registry(1), app="t")
        client.sync_registry(registry(2), app="t")
        for name in names:
            shard = client.shard_of_workflow(name)
            want = cron_id_for(name, Cron("0 0 1 1 *", input={"v": 2}))
            assert shard.redis.hkeys(shard.keys.cron_def) == [want.encode()]
            assert shard.redis.zrange(shard.keys.cron_next, 0, -1) == [want.encode()]
    finally:
        client.close()
