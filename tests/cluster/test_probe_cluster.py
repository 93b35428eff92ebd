"""The supervisor's put-back probe (``supervisor/probe.py``) on a cluster: its
PING must stay short-bounded. Its connection copied the client's routed
connection class, whose failed connect asks the cluster where the slot is
(``Router.discover``: a ``RedisCluster`` per known node with the client's 5 s
timeouts and retries) and re-pins the client's router. With a node cut off (a
partition: connects time out) that blocked the parent's loop for many seconds
at each probe, the very stall the probe exists to avoid."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import create_client
from supervisor.probe import Probe
from tests.servers import Cluster

pytestmark = pytest.mark.timeout(120)


def _cluster_calls(nodes: list[redis.Redis]) -> int:
    total = 0
    for node in nodes:
        stats = node.info("commandstats")
        total += sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_cluster"))
    return total


def test_a_probe_of_a_node_gone_asks_no_node_where_the_slot_is(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(full_coverage=False)
    client = create_client(cluster.url, prefix="probec", default=False)
    probe = Probe(client)
    others: list[redis.Redis] = []
    try:
        shard = client.shards[0]
        shard.redis.ping()  # pinned to the slot's master
        router = getattr(shard.redis, "router", None)
        assert router is not None and router.cluster and router.address is not None
        assert probe.answers()
        port = router.address[1]
        (victim,) = [n for n in cluster.masters if n.port == port]
        others = [n.client() for n in cluster.masters if n.port != port]
        generation = router.generation
        before = _cluster_calls(others)
        victim.kill()
        assert not probe.answers()  # the pooled connection: reset
        assert not probe.answers()  # a new connection: refused
        assert _cluster_calls(others) == before, "the probe asked the cluster where the slot is"
        assert router.generation == generation
    finally:
        probe.close()
        client.close()
        for r in others:
            r.close()
