"""The start-up eviction warning looks at every shard's master: with ``shards =
3`` on a 3-master cluster a prefix's runs live on three servers, and one of them
evicting loses runs as surely as the first. Only shard 0's server was asked."""

from __future__ import annotations

import os

import redis
from redis.crc import key_slot

from redflow_mp import create_client
from redflow_mp.shards import shard_tags
from supervisor.startup import eviction_warning
from tests.servers import Cluster


def test_an_evicting_master_of_another_shard_is_warned_about(redis_cluster: Cluster) -> None:
    cluster = redis_cluster
    prefix = f"evsh{os.getpid()}"
    tags = shard_tags(prefix, 3)
    ports = [cluster.node_for_slot(key_slot(t.encode())).port for t in tags]
    assert len(set(ports)) == 3  # one master per shard
    last = redis.Redis(host="127.0.0.1", port=ports[2])
    client = create_client(cluster.url, prefix=prefix, shards=3, default=False)
    try:
        last.config_set("maxmemory-policy", "allkeys-lru")
        warning = eviction_warning(client, cluster.url)
        assert warning is not None and "allkeys-lru" in warning  # None before
        assert f"shard 2's server, port {ports[2]}" in warning  # names the server
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        last.close()
        client.close()
