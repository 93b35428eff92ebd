"""``shards = 3`` on the 3-master cluster: each shard's connection is pinned to the
master serving its tag's slot, and the data plane runs there."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from redflow_mp import Registry, create_client, define_workflow
from redflow_mp.client import set_default_client
from redflow_mp.codec import text
from tests.cluster.test_connection import _migrate_slot
from tests.conftest import prefix_off_node
from tests.helpers import WorkerPool, texts
from tests.process.conftest import Supervisor, wait_until
from tests.servers import Cluster, SentinelSet

pytestmark = pytest.mark.timeout(120)


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
            with node.client() as r:
                assert r.get(f"{shard.keys.tag}:probe") == b"1"
            ports.add(node.port)
        assert len(ports) == 3  # three masters, one shard each
        assert len({id(s.transport) for s in c.shards}) == 3
    finally:
        c.close()


def test_runs_live_on_their_shard_master_and_children_cross_masters(
    redis_cluster: Cluster, registry: Registry
) -> None:
    prefix = prefix_off_node(redis_cluster, f"dp-{os.getpid()}", redis_cluster.nodes[0].port)
    c = create_client(redis_cluster.url, prefix=prefix, registry=registry, shards=3)
    pool = WorkerPool(c)
    try:

        def name_on(base: str, k: int) -> str:
            return next(
                f"{base}-{i}" for i in range(1000) if c.shard_of_workflow(f"{base}-{i}").index == k
            )

        @define_workflow(name_on("leaf", 1), queue="cq", registry=registry)
        def leaf(ctx: Any) -> int:
            return int(ctx.input) * 2

        @define_workflow(name_on("leaf", 2), queue="cq", registry=registry)
        def leaf2(ctx: Any) -> int:
            return int(ctx.input) + 1

        @define_workflow(name_on("root", 0), queue="cq", registry=registry)
        async def root(ctx: Any) -> Any:
            a = ctx.step.run_workflow("a", leaf, 20)
            b = ctx.step.run_workflow("b", leaf2, 20)
            return list(await asyncio.gather(a, b))

        c.sync_registry(registry, app="t")
        pool.start(queues=["cq"])
        pool.start(queues=["cq"], home_shard=1)
        pool.start(queues=["cq"], home_shard=2)
        h = root.run()
        assert h.result(timeout=30) == [40, 21]
        direct = [leaf.run(i) for i in range(5)] + [leaf2.run(i) for i in range(5)]
        assert [d.result(timeout=30) for d in direct] == [0, 2, 4, 6, 8, 1, 2, 3, 4, 5]
        kids = [text(x) for x in c.redis.smembers(c.keys.run_children(h.id))]
        assert sorted(c.shard_of_run(k).index for k in kids) == [1, 2]
        masters = set()
        for run_id in [h.id, *kids, *(d.id for d in direct)]:
            shard = c.shard_of_run(run_id)
            node = redis_cluster.node_for_slot(key_slot(shard.keys.run(run_id).encode()))
            with node.client() as r:
                assert r.exists(shard.keys.run(run_id)) == 1
                assert r.hget(shard.keys.run(run_id), "status") == b"succeeded"
            masters.add(node.port)
        assert len(masters) == 3
    finally:
        pool.stop_all()
        c.close()
        set_default_client(None)


@pytest.mark.parametrize("procs", [1, 3])
def test_a_supervisor_drains_three_shards_on_three_masters(
    redis_cluster: Cluster, tmp_path: Path, procs: int
) -> None:
    """procs < shards: the unwatched shards are served at each (shortened) block
    timeout; procs = shards: each child blocks on its own shard's master."""
    prefix = prefix_off_node(redis_cluster, f"sup-{os.getpid()}-{procs}", 0)
    sup = Supervisor(
        redis_cluster.url,
        prefix,
        tmp_path / "sup.log",
        procs=procs,
        modules=["tests.process.flows_shards"],
        args=["--shards", "3"],
    ).start()
    c = create_client(redis_cluster.url, prefix=prefix, registry=Registry(), shards=3)
    try:
        sup.wait_workers(procs)
        wait_until(lambda: c.get_workflow_meta("shard-parent"), 20, message="synced")
        handles = []
        for name in ("shard-job-a", "shard-job-b", "shard-job-c"):
            handles += c.run_many_by_name(name, list(range(40)))
        parents = [c.run_by_name("shard-parent", i) for i in range(5)]
        assert [p.result(timeout=60) for p in parents] == [1, 2, 3, 4, 5]
        assert [h.result(timeout=60) for h in handles] == list(range(40)) * 3
        ledger = Counter(texts(c.redis.lrange(f"{c.keys.tag}:ledger", 0, -1)))
        assert all(ledger[h.id] == 1 for h in handles)
        assert sum(ledger.values()) >= 120 + 5 + 5
        ports = {
            redis_cluster.node_for_slot(key_slot(f"{s.keys.tag}:x".encode())).port for s in c.shards
        }
        assert len(ports) == 3
    finally:
        sup.stop()
        c.close()
        set_default_client(None)


@pytest.mark.timeout(180)
def test_one_shard_follows_a_reshard_of_its_slot(redis_cluster: Cluster) -> None:
    """Shard 2's slot moves to another master between two bursts: that shard's
    connections follow MOVED (its router re-pins), the other shards' stay; every
    run of both bursts succeeded."""
    registry = Registry()
    prefix = prefix_off_node(redis_cluster, f"rs-{os.getpid()}", redis_cluster.nodes[0].port)
    c = create_client(redis_cluster.url, prefix=prefix, registry=registry, shards=3)
    try:
        names = {
            k: next(f"rs-{i}" for i in range(1000) if c.shard_of_workflow(f"rs-{i}").index == k)
            for k in range(3)
        }
        flows = []
        for k in range(3):

            @define_workflow(names[k], queue="rq", registry=registry)
            def flow(ctx: Any) -> int:
                return int(ctx.input) + 1

            flows.append(flow)

        def burst(n: int) -> list[str]:
            pool = WorkerPool(c)
            for home in range(3):
                pool.start(queues=["rq"], home_shard=home, registry=registry, maintenance=False)
            try:
                hs = [f.run(i) for f in flows for i in range(n)]
                assert [h.result(timeout=60) for h in hs] == list(range(1, n + 1)) * 3
                return [h.id for h in hs]
            finally:
                pool.stop_all()

        first = burst(30)
        slot = key_slot(f"{c.shards[2].keys.tag}:x".encode())
        before = redis_cluster.node_for_slot(slot)
        target = next(n for n in redis_cluster.masters if n.port != before.port)
        gens = [s.transport.router.generation for s in c.shards]  # type: ignore[union-attr]
        _migrate_slot(redis_cluster, slot, target.port)
        second = burst(30)
        routers = [s.transport.router for s in c.shards]
        assert all(r is not None for r in routers)
        assert routers[2].address == ("127.0.0.1", target.port)  # type: ignore[union-attr]
        assert routers[2].generation > gens[2]  # type: ignore[union-attr]
        assert [r.generation for r in routers[:2]] == gens[:2]  # type: ignore[union-attr]
        for run_id in first + second:
            state = c.get_run(run_id)
            assert state is not None and state.status == "succeeded", run_id
    finally:
        c.close()
        set_default_client(None)


@pytest.mark.timeout(120)
def test_shards_through_sentinel_and_with_durability_wait_on_a_cluster(
    sentinel_set: SentinelSet, cluster_factory: Callable[..., Cluster]
) -> None:
    """Sentinel: every shard on the one master's connections. A cluster with
    replicas and durability = "wait": every shard's own transport (pinned to its
    master) carries the setting, so its WAIT is pipelined behind the script call on
    the same connection; runs on the three shards all succeed."""
    for url, durability in ((sentinel_set.url, "none"), (cluster_factory(replicas=1).url, "wait")):
        registry = Registry()
        c = create_client(
            url,
            prefix=f"sw-{os.getpid()}",
            registry=registry,
            shards=3,
            durability=durability,
            durability_wait_ms=5000,
        )
        pool = WorkerPool(c)
        try:
            flows = []
            for k in range(3):
                name = next(
                    f"sw-{i}" for i in range(1000) if c.shard_of_workflow(f"sw-{i}").index == k
                )

                @define_workflow(name, queue="wq", registry=registry)
                def flow(ctx: Any) -> str:
                    return str(ctx.run.id)

                flows.append(flow)
            pool.start(queues=["wq"], registry=registry)
            hs = [f.run() for f in flows for _ in range(5)]
            assert [h.result(timeout=30) for h in hs] == [h.id for h in hs]
            shared = [s.transport is c.transport for s in c.shards]
            assert shared == ([True] * 3 if durability == "none" else [True, False, False])
            assert all(s.transport.durability == durability for s in c.shards)
        finally:
            pool.stop_all()
            c.close()
            set_default_client(None)
