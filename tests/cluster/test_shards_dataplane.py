"""``shards = 3`` on the 3-master cluster: each shard's connection is pinned to the
master serving its tag's slot, and the data plane runs there."""

from __future__ import annotations

import os

from redis.crc import key_slot

from redflow_mp import Registry, create_client
from tests.conftest import prefix_off_node
from tests.servers import Cluster


def test_each_shard_is_pinned_to_its_master(redis_cluster: Cluster, registry: Registry) -> None:
    prefix = prefix_off_node(redis_cluster, f"pin-{os.getpid()}", redis_cluster.nodes[0].port)
    c = create_client(redis_cluster.url, prefix=prefix, registry=registry, default=False, shards=3)
    try:
        ports = set()
        for shard in c.shards:
            slot = key_slot(f"{shard.keys.tag}:x".encode())
            node = redis_cluster.node_for_slot(slot)
            shard.redis.set(f"{shard.keys.tag}:probe", b"1")
            router = shard.transport.router
            assert router is not None and router.cluster
            assert router.address == ("127.0.0.1", node.port)
            assert node.client().get(f"{shard.keys.tag}:probe") == b"1"
            ports.add(node.port)
        assert len(ports) == 3  # three masters, one shard each
        assert len({id(s.transport) for s in c.shards}) == 3
    finally:
        c.close()
