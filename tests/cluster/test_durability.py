"""``durability``: what an acknowledged write survives.

- Unit of behaviour, on real servers: with ``"wait"`` a write on a master with a
  replica is acknowledged after the replica has it (the replica holds the run
  at once); on a master without a replica it fails with ``NotReplicatedError``
  after ``durability_wait_ms`` (a network error: its fate is unknown). The async
  client does the same.
- Fault: a cluster master that serves the prefix's slot is SIGKILLed under
  load; its replica takes over, and the killed node is started again (it comes
  back as the new master's replica). With ``"wait"`` no acknowledged run is lost
  (every invariant of the fault suite holds). With the default ``"none"`` the
  count lost is printed (and recorded in the fault results table), not asserted
  to be zero: replication is asynchronous.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from redflow_mp import Context, NotReplicatedError, Registry, create_client, define_workflow
from redflow_mp.options import RunOptions
from tests.cluster.durable import durable_async_client, durable_client, trivial_flow
from tests.conftest import prefix_off_node
from tests.faults.drivers import wait_for
from tests.faults.harness import faults_harness
from tests.helpers import WorkerPool
from tests.redis_server import flavor_binary
from tests.servers import Cluster, master_and_replica


def _flow(registry: Registry) -> Any:
    return trivial_flow(registry, "durable")


def test_wait_acknowledges_after_the_replica_has_the_write(prefix: str, registry: Registry) -> None:
    with master_and_replica() as (master, replica):
        r = replica.client()
        client = create_client(
            master.url, prefix=prefix, registry=registry, default=False, durability="wait"
        )
        wf = _flow(registry)
        client.sync_registry(registry, app="t")
        for _ in range(20):
            run_id = client.enqueue_workflow(wf, None).id
            # acknowledged = on the replica already (no waiting here)
            assert r.exists(f"{{{prefix}}}:run:{run_id}") == 1
        client.close()
        r.close()


def test_wait_without_a_replica_fails_with_not_replicated(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    client = durable_client(redis_url, prefix, registry, 50)
    wf = _flow(registry)
    client.sync_registry(registry, app="t")
    started = time.monotonic()
    with pytest.raises(NotReplicatedError, match=r"no replica .* within 50 ms"):
        client.enqueue_workflow(wf, None)
    assert time.monotonic() - started >= 0.05
    assert isinstance(NotReplicatedError("x"), redis.TimeoutError)  # a network error
    client.close()

    async def main() -> None:
        ac = durable_async_client(redis_url, prefix, registry, 50)
        with pytest.raises(NotReplicatedError):
            await ac.run_by_name("durable", None)
        await ac.aclose()

    asyncio.run(main())
    with pytest.raises(ValueError, match="durability must be one of"):
        create_client(redis_url, prefix=prefix, default=False, durability="always")


def _kill_owner_under_load(cluster: Cluster, tmp_path: Path, durability: str) -> tuple[int, int]:
    """Producer + supervisor on the cluster; SIGKILL the master serving the prefix
    mid-load; settle on the promoted replica; (acknowledged, lost)."""
    prefix = prefix_off_node(cluster, f"dur-{durability}-{os.getpid()}", cluster.nodes[0].port)
    slot = key_slot(f"{{{prefix}}}".encode())
    args = ["--durability", durability]
    with faults_harness(tmp_path, prefix) as fx:
        sup = fx.supervisor(cluster.url, procs=2, args=args)
        sup.wait_workers(2)
        prod = fx.producer(cluster.url, 500, rate=200)
        prod.client.close()  # the harness's producer client, replaced by one with durability
        prod.client = create_client(
            cluster.url, prefix=prefix, default=False, durability=durability
        )
        prod.start()
        time.sleep(1.0)  # load running: ~200 runs acknowledged
        owner = cluster.node_for_slot(slot)
        fx.fault("redis-kill-master", seconds=30)
        owner.kill()
        new_owner = wait_for(
            lambda: (n := cluster.node_for_slot(slot)).port != owner.port and n,
            30,
            "a replica to take over the slot",
        )
        # The promoted replica has no replica of its own: under "wait" every write
        # fails (NotReplicatedError, retried) until the old master is back, as a
        # replica of the new one (what an operator, or a restart policy, does).
        owner.start()
        cluster.wait_ready(60)
        prod.wait(180)
        raw = redis.Redis(host="127.0.0.1", port=new_owner.port, socket_timeout=10)
        report = fx.finish(
            raw,
            f"cluster master killed, durability {durability}",
            recovery_s=None,
            settle_timeout=120,
            note=f"durability {durability}",
        )
        raw.close()
        print(
            f"\n[kill a cluster master, durability {durability}] acknowledged "
            f"{report.acknowledged}, lost {len(report.lost)}, producer retries {prod.retries}"
        )
        if durability == "wait":
            report.assert_ok()
        else:
            # everything that is in Redis settles; what was lost is reported
            assert not report.stuck, report.summary()
        return report.acknowledged, len(report.lost)


@pytest.mark.process
@pytest.mark.timeout(420)
def test_killing_a_cluster_master_loses_no_acknowledged_run_with_wait(
    redis_cluster_with_replicas: Cluster, tmp_path: Path
) -> None:
    acknowledged, lost = _kill_owner_under_load(redis_cluster_with_replicas, tmp_path, "wait")
    assert acknowledged >= 450 and lost == 0


@pytest.mark.process
@pytest.mark.timeout(420)
def test_killing_a_cluster_master_with_the_default_durability_reports_its_losses(
    redis_cluster_with_replicas: Cluster, tmp_path: Path
) -> None:
    acknowledged, lost = _kill_owner_under_load(redis_cluster_with_replicas, tmp_path, "none")
    assert acknowledged >= 450
    assert 0 <= lost <= acknowledged  # printed; docs/operations.md "Durability" quotes it


def _aof_ready(r: Any) -> bool:
    info = r.info("persistence")
    return bool(
        info.get("aof_enabled")
        and not info.get("aof_rewrite_in_progress")
        and not info.get("aof_rewrite_scheduled")
    )


def test_waitaof_acknowledges_after_master_and_replica_fsynced(
    prefix: str, registry: Registry
) -> None:
    """``durability = "waitaof"`` (WAITAOF 1 1: Redis >= 7.2, here Valkey 9 from the
    embedded extra) with appendonly on both servers: acknowledged writes are on the
    replica; with appendonly off on the replica, a write fails as not replicated."""
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with master_and_replica(aof, flavor_binary("valkey9")) as (master, replica):
        r = replica.client()
        # An enqueue waits once (one WAITAOF of durability_wait_ms; it resent
        # itself after NotReplicatedError before, a second wait): under load (the
        # whole of tests/cluster, -n 2) both fsyncs once took more than the default
        # 1000 ms, so the wait is the test's patience, and the replica's AOF is
        # ready (no rewrite after the full sync pending) first.
        wait_for(lambda: _aof_ready(r), 20, "the replica's append-only file")
        client = durable_client(master.url, prefix, registry, 10_000, "waitaof")
        wf = _flow(registry)
        client.sync_registry(registry, app="t")
        run_id = client.enqueue_workflow(wf, None).id
        assert r.exists(f"{{{prefix}}}:run:{run_id}") == 1
        r.config_set("appendonly", "no")
        short = durable_client(master.url, prefix, registry, 100, "waitaof")
        with pytest.raises(NotReplicatedError, match="fsynced by 1 master and 0 replicas"):
            short.enqueue_workflow(wf, None)
        short.close()
        client.close()
        r.close()


def test_a_replica_stalled_past_the_ride_out_puts_the_run_back_not_fails_it(
    prefix: str, registry: Registry
) -> None:
    """durability "wait", default lease (5 s): the replica stops confirming for
    longer than a step write's ride-out (max(10 s, 3 leases) = 15 s), as after a
    failover until the old master rejoins. The write gave up into the handler, and
    the run failed with NotReplicatedError on its one attempt (CI: sentinel
    failover, durability wait). Now it is put back without spending an attempt
    and finishes once the replica confirms again; the step recorded on the master
    is not run again."""
    pool: WorkerPool | None = None
    with master_and_replica() as (master, replica):
        try:
            assert replica.proc is not None
            pid = replica.proc.pid
            stall_s = 24.0  # well past the ride-out of 15 s (a resend takes ~2 s here)
            bodies: list[int] = []

            @define_workflow("stalled", registry=registry)
            def stalled(ctx: Context[Any]) -> str:
                def first() -> str:
                    bodies.append(1)
                    os.kill(pid, signal.SIGSTOP)
                    threading.Timer(stall_s, os.kill, (pid, signal.SIGCONT)).start()
                    return "recorded"

                return str(ctx.step.run("first", first))

            client = create_client(
                master.url, prefix=prefix, registry=registry, default=False, durability="wait"
            )
            client.sync_registry(registry, app="t")
            handle = stalled.run(None, client=client)
            pool = WorkerPool(client)
            pool.start(client)  # default lease_ms
            # before: RunFailedError (NotReplicatedError)
            assert handle.result(timeout=90) == "recorded"
            state = client.get_run(handle.id)
            assert state is not None and state.attempt == 1  # no attempt spent
            assert bodies == [1]  # the step was recorded on the master: not run again
            pool.stop_all()
            pool = None
            client.close()
        finally:
            if pool is not None:
                pool.stop_all()


def test_the_cancel_cascade_is_acknowledged_only_once_a_replica_has_it(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    """durability "wait" on a server without a replica: every run-state write must
    fail with NotReplicatedError, the cancels of a parent's children too. The
    cascade (``cancel_run``'s, and the worker's for a run that ended canceled)
    sends them in a pipeline of ``cancel_run`` scripts with no WAIT: it
    acknowledged cancels no replica had (a failover then brought the children
    back to life after their parent was canceled). Before: ``cancel_children``
    returned 1 (no NotReplicatedError raised); the async client likewise."""

    @define_workflow("cascade-child", queue="unserved", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return 1

    @define_workflow("cascade-parent", registry=registry, max_concurrency=2)
    def parent(ctx: Context[Any]) -> int:
        return int(ctx.step.run_workflow("child", child, None))

    setup = create_client(redis_url, prefix=prefix, registry=registry, default=False)
    setup.sync_registry(registry, app="t")
    parents = [parent.run(None, client=setup).id for _ in range(2)]
    pool = WorkerPool(setup)
    pool.start(setup, queues=["default"])
    try:
        wait_for(
            lambda: all(setup.get_run(p).status == "suspended" for p in parents),  # type: ignore[union-attr]
            20,
            "the parents suspended on their children",
        )
    finally:
        pool.stop_all()
    durable = durable_client(redis_url, prefix, registry, 50)
    try:
        # before: returned 1 (the child canceled on the master, no replica asked)
        with pytest.raises(NotReplicatedError):
            durable.cancel_children(parents[0])
    finally:
        durable.close()

    async def main() -> None:
        ac = durable_async_client(redis_url, prefix, registry, 50)
        try:
            # before: returned (the child canceled on the master, no replica asked)
            with pytest.raises(NotReplicatedError):
                await ac._cancel_children(parents[1], None)
        finally:
            await ac.aclose()

    asyncio.run(main())
    setup.close()


def test_run_workflows_children_are_acknowledged_only_once_a_replica_has_them(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    """durability "wait" on a server without a replica: the children that
    ``step.run_workflows`` starts (``Runs.enqueue_each``, one pipeline of
    ``enqueue_run`` calls) were acknowledged with no WAIT. With shards > 1 on a
    cluster they live on another master than their parent, whose later waited
    writes do not cover them: a failover of theirs lost children the parent went
    on waiting for. Before: ``enqueue_each`` returned the ids (no
    NotReplicatedError raised); now it raises, and the step's ride-out resends
    (the children's keys make the resend harmless)."""
    wf = _flow(registry)
    setup = create_client(redis_url, prefix=prefix, registry=registry, default=False)
    setup.sync_registry(registry, app="t")
    durable = durable_client(redis_url, prefix, registry, 50)
    try:
        options = [RunOptions.of(idempotency_key=f"child-{i}") for i in range(2)]
        # before: returned the two ids, no replica asked
        with pytest.raises(NotReplicatedError):
            durable.enqueue_each(wf, [None, None], options)
        # the resend (the step's ride-out) finds the same two runs
        ids = setup.enqueue_each(wf, [None, None], options)
        assert len(set(ids)) == 2
        assert len(setup.list_runs(workflow="durable")) == 2
    finally:
        durable.close()
        setup.close()
