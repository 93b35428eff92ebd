"""Connecting to a Redis Cluster and through Sentinel: routing, redirects, bad input.

Real servers only (the session's 3-master cluster, clusters and Sentinel sets of
one test's own). What is checked:

- every script call declares its keys (at least one), all in the prefix's slot;
- a client given a node that does not serve the prefix's slot finds the one
  that does, and says so (``describe``);
- resharding the prefix's slot to another master: a read during the move
  waits out ASK, the client and its workers follow MOVED, nothing is lost;
- bad input: ``cluster=True`` on a server that is not in cluster mode, a
  Sentinel service name nobody monitors (library and supervisor), malformed
  ``redis+sentinel://`` URLs (passwords masked), a prefix whose hash tag
  another application uses for keys of the same names (the supervisor refuses).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from redis.crc import key_slot

from redflow_mp import RedflowError, Registry, Worker, create_client, define_workflow
from redflow_mp.connection import parse_target
from tests.conftest import prefix_off_node
from tests.process.conftest import clean_env
from tests.redis_server import RedisServer
from tests.servers import Cluster, SentinelSet

ROOT = Path(__file__).resolve().parents[2]
_ARGS = ("--app", "a", "--procs", "1", "--module", "tests.process.flows")


def _flows(registry: Registry) -> dict[str, Any]:
    @define_workflow("leaf", queue="cl", registry=registry)
    def leaf(ctx: Any) -> int:
        return int(ctx.input) * 2

    @define_workflow("tree", queue="cl", registry=registry)
    def tree(ctx: Any) -> int:
        a = ctx.step.run("a", lambda: 1)
        b = ctx.step.run_workflow("child", leaf, 20)
        return int(a) + int(b)

    return {"leaf": leaf, "tree": tree}


def test_every_script_call_declares_keys_of_the_prefix_slot(
    redis_cluster: Cluster, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = prefix_off_node(redis_cluster, f"keys-{os.getpid()}", redis_cluster.nodes[0].port)
    client = create_client(redis_cluster.url, prefix=prefix, registry=registry, default=False)
    flows = _flows(registry)
    client.sync_registry(registry, app="t")
    slot = key_slot(client.keys.tag.encode())
    calls: list[tuple[Any, ...]] = []
    real = client.transport.call

    def record(args: tuple[Any, ...]) -> None:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if name.upper() in ("EVALSHA", "EVAL", "FCALL", "FCALL_RO", "EVALSHA_RO"):
            calls.append(args)

    def recording(*args: Any, retry: bool = True, fresh: bool = True) -> Any:
        record(args)
        return real(*args, retry=retry, fresh=fresh)

    real_packed = client.transport.call_packed

    def recording_packed(packed: bytes, *, retry: bool = True, fresh: bool = True) -> Any:
        # a call packed ahead (the plain enqueue, the worker's claim): its arguments
        reader = hiredis.Reader()
        reader.feed(packed)
        record(tuple(reader.gets()))
        return real_packed(packed, retry=retry, fresh=fresh)

    monkeypatch.setattr(client.transport, "call", recording)
    monkeypatch.setattr(client.transport, "call_packed", recording_packed)
    worker = Worker(client, registry=registry, block_timeout=0.05, maintenance=True)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        handles = [client.enqueue_workflow(flows["tree"], None) for _ in range(3)]
        assert [h.result(timeout=30) for h in handles] == [41, 41, 41]
        victim = client.enqueue_workflow(flows["leaf"], 1, run_at=time.time() + 3600)
        assert client.cancel_run(victim.id)
    finally:
        worker.stop()
        thread.join(10)
    assert len(calls) > 10
    sha = client.scripts._shas["claim_run"]
    assert [a for a in calls if (a[1].decode() if isinstance(a[1], bytes) else a[1]) == sha]
    for args in calls:
        numkeys = int(args[2])
        keys = [a.decode() if isinstance(a, bytes) else str(a) for a in args[3 : 3 + numkeys]]
        assert numkeys >= 1, f"a script call without keys: {args[:3]}"
        assert all(key_slot(k.encode()) == slot for k in keys), keys
    assert str(redis_cluster.node_for_slot(slot).port) in client.transport.describe()
    client.close()


def _migrate_slot(
    cluster: Cluster, slot: int, dst_port: int, during: Callable[[], None] = lambda: None
) -> None:
    """Move ``slot`` to the master on ``dst_port`` as ``redis-cli --cluster reshard``
    does: IMPORTING/MIGRATING, MIGRATE its keys, then, while the source answers
    ASK for every key of the slot (``during()`` runs then, for 0.5 s), SETSLOT
    NODE on every master (MOVED from then on)."""
    src = cluster.node_for_slot(slot)
    dst = next(n for n in cluster.nodes if n.port == dst_port)

    def call(node: RedisServer, *args: Any) -> Any:
        r = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=10)
        try:
            execute: Callable[..., Any] = r.execute_command
            return execute(*args)
        finally:
            r.close()

    src_id = call(src, "CLUSTER", "MYID").decode()
    dst_id = call(dst, "CLUSTER", "MYID").decode()
    call(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    call(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := call(src, "CLUSTER", "GETKEYSINSLOT", slot, 1000):
        call(src, "MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "KEYS", *keys)
    during()
    time.sleep(0.5)
    for node in cluster.masters:
        call(node, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)


@pytest.mark.timeout(180)
def test_the_clients_follow_a_reshard_of_the_prefix_slot(
    redis_cluster: Cluster, registry: Registry
) -> None:
    """The app's slot moves to another master between two bursts of work (its
    workers idle: see docs/operations.md, "Redis Cluster", on moving a slot under load). A
    read issued while the source answers ASK waits and gets its answer; the same
    client and workers then follow MOVED to the new master; nothing is lost."""
    cluster = redis_cluster
    prefix = prefix_off_node(cluster, f"reshard-{os.getpid()}", cluster.nodes[0].port)
    slot = key_slot(f"{{{prefix}}}".encode())
    client = create_client(cluster.url, prefix=prefix, registry=registry, default=False)
    flows = _flows(registry)
    client.sync_registry(registry, app="t")
    before = cluster.node_for_slot(slot)
    target = next(n for n in cluster.masters if n.port != before.port)

    def burst(n: int) -> list[str]:
        workers = [Worker(client, registry=registry, block_timeout=0.05) for _ in range(2)]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        for t in threads:
            t.start()
        try:
            ids = [client.enqueue_workflow(flows["tree"], None).id for _ in range(n)]
            assert all(client.handle(i).result(timeout=60) == 41 for i in ids)
            return ids
        finally:
            for w in workers:
                w.stop()
            for t in threads:
                t.join(10)

    first = burst(100)
    seen: list[Any] = []

    def read_while_asked() -> None:
        reader = threading.Thread(target=lambda: seen.append(client.get_run(first[0])))
        reader.start()
        seen.append(reader)

    _migrate_slot(cluster, slot, target.port, read_while_asked)
    reader = seen.pop(0)
    assert isinstance(reader, threading.Thread)
    reader.join(15)
    assert len(seen) == 1 and seen[0] is not None and seen[0].status == "succeeded"
    second = burst(100)
    assert cluster.node_for_slot(slot).port == target.port
    router = client.transport.router
    assert router is not None and router.generation >= 2  # pinned, then re-pinned (MOVED)
    assert f"on 127.0.0.1:{target.port}" in client.transport.describe()
    for run_id in first + second:
        state = client.get_run(run_id)
        assert state is not None and state.status == "succeeded", run_id
    old = redis.Redis(host="127.0.0.1", port=before.port)
    execute: Callable[..., Any] = old.execute_command  # untyped in redis-py
    assert execute("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    old.close()
    client.close()


def test_cluster_true_on_a_server_not_in_cluster_mode_is_refused(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    client = create_client(redis_url, prefix=prefix, registry=registry, default=False, cluster=True)
    with pytest.raises(RedflowError, match="not usable as a cluster"):
        client.get_run("01M9200000000000000000000")
    client.close()


def _supervise_once(url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    """A supervisor's start with ``url`` given as REDFLOW_URL (not on the command line)."""
    return subprocess.run(
        [sys.executable, "-m", "redflow_supervisor", *_ARGS, "--prefix", prefix],
        env=clean_env({"REDFLOW_URL": url}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_sentinel_service_nobody_monitors_is_refused(
    sentinel_set: SentinelSet, tmp_path: Path
) -> None:
    hosts = ",".join(f"127.0.0.1:{p}" for _, p in sentinel_set.sentinel_addresses)
    url = f"redis+sentinel://:s3cret-pw@{hosts}/no-such-service"
    with pytest.raises(RedflowError, match="monitors a master named 'no-such-service'") as info:
        create_client(url, prefix="p", default=False)
    assert "s3cret-pw" not in str(info.value)
    # the supervisor: an exit message, no traceback, the password masked
    proc = _supervise_once(url, "p")
    assert proc.returncode != 0
    assert "monitors a master named 'no-such-service'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret-pw" not in proc.stderr
    # the right name works, and the service can also come from sentinel_master
    ok = create_client(
        f"redis+sentinel://{hosts}", prefix="p", default=False, sentinel_master="redflow-test"
    )
    assert ok.get_run("01M9200000000000000000000") is None
    ok.close()


def test_sentinel_url_forms() -> None:
    t = parse_target("redis+sentinel://u:pw@h1:1,h2:2,h3/svc/3")
    assert t.kind == "sentinel" and t.service == "svc" and t.db == 3
    assert t.sentinels == (("h1", 1), ("h2", 2), ("h3", 26379))
    assert (t.username, t.password) == ("u", "pw")
    assert parse_target("rediss+sentinel://h:1", sentinel_master="m").tls
    with pytest.raises(ValueError, match="names no Sentinel service") as info:
        parse_target("redis+sentinel://:hidden@h:1")
    assert "hidden" not in str(info.value)
    with pytest.raises(ValueError, match="sentinel_master is 'b'"):
        parse_target("redis+sentinel://h:1/a", sentinel_master="b")
    with pytest.raises(ValueError, match="bad sentinel address"):
        parse_target("redis+sentinel://:hidden@h:x/a")
    with pytest.raises(ValueError, match="not a redis\\+sentinel"):
        parse_target("redis://h:1", sentinel_master="a")
    with pytest.raises(ValueError, match="exclude each other"):
        parse_target("redis+sentinel://h:1/a", cluster=True)


def test_a_hash_tag_used_by_another_application_is_refused(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    raw = redis_server.client()
    raw.set(f"{{{prefix}}}:workflows", "another app's string")
    try:
        proc = _supervise_once(redis_server.url, prefix)
        assert proc.returncode != 0
        assert f"another application uses the hash tag {{{prefix}}}" in proc.stderr, proc.stderr
        assert raw.get(f"{{{prefix}}}:workflows") == b"another app's string"  # untouched
    finally:
        raw.delete(f"{{{prefix}}}:workflows")
        raw.close()


def test_sentinels_that_require_a_password_are_refused_with_a_clear_line(
    sentinel_set: SentinelSet,
) -> None:
    """Sentinels with a password of their own (``requirepass`` / the default
    user's ACL) answer every command without AUTH with an authentication error,
    a ``ConnectionError`` subclass in redis-py: the service check took them as
    unreachable and passed, and every command then failed with a retried
    ``MasterNotFoundError: No master found for 'redflow-test' : <three client
    reprs> - auth:AuthenticationError ...`` (``DID NOT RAISE`` RedflowError
    before the fix). A supervisor retried it until its patience ran out."""
    for sentinel in sentinel_set.sentinels:
        assert sentinel.call("ACL", "SETUSER", "default", "on", "resetpass", ">sentinel-pw")
    hosts = ",".join(f"127.0.0.1:{p}" for _, p in sentinel_set.sentinel_addresses)
    url = f"redis+sentinel://:s3cret-pw@{hosts}/redflow-test"
    with pytest.raises(RedflowError, match=r"Sentinel .* requires a password") as info:
        create_client(url, prefix="p", default=False)
    assert "s3cret-pw" not in str(info.value)
    assert "sentinels are asked without" in str(info.value)
    proc = _supervise_once(url, "p")  # the supervisor exits with that line at once
    assert proc.returncode != 0
    assert "requires a password" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "s3cret-pw" not in proc.stderr
