"""The prefix's slot moved to another master while supervisors drain runs.

Real processes and servers: a 3-master cluster of the test's own, a supervisor
(2 children, default settings) and a producer of the fault suite's workload
(chains of steps, children, a concurrency gate, retries). Mid-drain the slot
is moved as ``redis-cli --cluster reshard`` moves it: IMPORTING/MIGRATING, its
keys MIGRATEd ten at a time (redis-cli's default pipeline), then SETSLOT NODE
everywhere. Every invariant of ``tests/faults/invariants.py`` holds afterwards:
every acknowledged run finished, exactly once, none stranded.

Before every script started by probing a key that is never written (see
``luafiles.SLOT_PROBE``), a script that ran on the source while some of the
slot's keys had moved stopped at the first one it touched ("Script attempted to
access a non local key"), keeping the writes it had made: seen here, a finish
that had marked its run succeeded and stopped at the run's idempotency key (on
the target already), which then never expired.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from redflow_mp import Registry, connection, create_client, define_workflow
from redflow_mp.errors import RedisClusterDownError
from redflow_mp.ids import new_token
from redflow_mp.luafiles import SLOT_PROBE
from tests.faults.harness import faults_harness
from tests.redis_server import RedisServer
from tests.servers import Cluster

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def _call(node: RedisServer, *args: Any) -> Any:
    r = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=10)
    try:
        execute: Callable[..., Any] = r.execute_command  # untyped in redis-py
        return execute(*args)
    finally:
        r.close()


def move_slot_slowly(cluster: Cluster, slot: int, dst: RedisServer, batch: int = 10) -> int:
    """Move ``slot`` to ``dst`` as redis-cli's reshard does, ``batch`` keys per
    MIGRATE with a short pause between batches (so that the workload runs while
    part of the slot's keys are on each side); returns the keys moved."""
    src = cluster.node_for_slot(slot)
    src_id = _call(src, "CLUSTER", "MYID").decode()
    dst_id = _call(dst, "CLUSTER", "MYID").decode()
    _call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    _call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    while keys := _call(src, "CLUSTER", "GETKEYSINSLOT", slot, batch):
        _call(src, "MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "REPLACE", "KEYS", *keys)
        moved += len(keys)
        time.sleep(0.05)
    # redis-cli: the target first, then the source, then the others
    _call(dst, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    _call(src, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    for node in cluster.masters:
        if node.port not in (src.port, dst.port):
            _call(node, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return moved


def test_a_slot_moved_mid_drain_strands_no_run(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = cluster_factory()
    prefix = f"move-{os.getpid()}"
    slot = key_slot(f"{{{prefix}}}".encode())
    with faults_harness(tmp_path, prefix) as fx:
        sup = fx.supervisor(cluster.url, procs=2)
        sup.wait_workers(2)
        prod = fx.producer(cluster.url, 400, rate=100).start()
        moves = []
        for _ in range(2):  # there and back: two moves, each under load
            time.sleep(1.0)
            src = cluster.node_for_slot(slot)
            dst = next(n for n in cluster.masters if n.port != src.port)
            moves.append(move_slot_slowly(cluster, slot, dst))
        prod.wait(120)
        owner = cluster.node_for_slot(slot)
        raw = redis.Redis(host="127.0.0.1", port=owner.port, socket_timeout=10)
        report = fx.finish(
            raw,
            f"cluster: slot moved twice mid-drain ({moves} keys)",
            recovery_s=None,
            settle_timeout=60,
        )
        raw.close()
        print(f"keys moved: {moves}")
        report.assert_ok(all_succeeded=True)


@pytest.mark.parametrize(("functions", "neighbour"), [(False, False), (True, False), (False, True)])
def test_a_finish_on_a_half_moved_slot_writes_nothing_until_the_move_ends(
    cluster_factory: Callable[..., Cluster],
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    functions: bool,
    neighbour: bool,
) -> None:
    """The same, one call at a time: the slot MIGRATING with one key (the run's
    idempotency key) already on the target. The finish is refused as a whole
    (the run stays running, its lease held) until the move ends; then it applies,
    and the idempotency key gets its expiry. Before the probe the finish stopped
    at the key, after marking the run succeeded: the key never expired. Through
    EVALSHA and through the function library (``redis_functions=True``, Redis >= 7):
    both are the cluster's variant, with the probe (standalone has none:
    tests/lua/test_slot_probe_variant.py). ``neighbour``: something wrote the
    probe's key (still on the source): the probe must stop the finish all the
    same (before it fell back to a key nothing wrote, the finish failed
    ``assert b'succeeded' == b'running'``)."""
    cluster = cluster_factory()
    prefix = f"half-{os.getpid()}"
    slot = key_slot(f"{{{prefix}}}".encode())
    client = create_client(
        cluster.url, prefix=prefix, registry=registry, default=False, redis_functions=functions
    )

    @define_workflow("half", queue="q", registry=registry)
    def half(ctx: Any) -> int:
        return 1

    client.sync_registry(registry, app="t")
    run_id = client.enqueue_workflow(half, None, idempotency_key="k1").id
    token = new_token()
    _, claimed = client.scripts.claim(("q",), 60_000, token)
    assert claimed is not None and claimed.id == run_id
    assert client.transport.clustered
    if functions and client.transport.server_version() >= (7, 0):
        assert client.scripts._functions is not None
        assert SLOT_PROBE in client.scripts._library
    else:
        assert client.scripts._sources is not None
        assert SLOT_PROBE in client.scripts._sources["finalize_run"]
    src = cluster.node_for_slot(slot)
    if neighbour:
        _call(src, "SET", f"{{{prefix}}}:slot-probe", "x")
    dst = next(n for n in cluster.masters if n.port != src.port)
    src_id = _call(src, "CLUSTER", "MYID").decode()
    dst_id = _call(dst, "CLUSTER", "MYID").decode()
    _call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    _call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    idem = client.keys.idempotency("half", "k1")
    _call(src, "MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "KEYS", idem)
    monkeypatch.setattr(connection, "CLUSTER_PATIENCE", 1.0)
    with pytest.raises(RedisClusterDownError):
        client.scripts.finalize(run_id, token, "succeeded", b"1")
    assert _call(src, "HGET", client.keys.run(run_id), "status") == b"running"
    while keys := _call(src, "CLUSTER", "GETKEYSINSLOT", slot, 100):
        _call(src, "MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "KEYS", *keys)
    for node in (dst, src, *(n for n in cluster.masters if n.port not in (src.port, dst.port))):
        _call(node, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    assert client.scripts.finalize(run_id, token, "succeeded", b"1") == "succeeded"
    assert _call(dst, "HGET", client.keys.run(run_id), "status") == b"succeeded"
    assert _call(dst, "PTTL", idem) > 0
    client.close()


def test_the_async_client_sends_the_probe_to_a_cluster_only(
    cluster_factory: Callable[..., Cluster], redis_server: RedisServer
) -> None:
    """The asyncio client picks the variant as the sync one does: the probe on a
    cluster (detected on its first connection), none on one server."""
    import asyncio

    from redflow_mp.aio_scripts import AsyncScripts
    from redflow_mp.aio_transport import AsyncTransport
    from redflow_mp.keys import Keys

    cluster = cluster_factory()

    async def variant(url: str) -> tuple[bool, bool]:
        transport = AsyncTransport(url, route_key="{aioprobe}")
        scripts = AsyncScripts(transport, Keys("aioprobe"))
        try:
            await scripts._load()
            assert scripts._sources is not None
            return transport.clustered, SLOT_PROBE in scripts._sources["claim_run"]
        finally:
            await transport.aclose()

    assert asyncio.run(variant(cluster.url)) == (True, True)
    assert asyncio.run(variant(redis_server.url)) == (False, False)
