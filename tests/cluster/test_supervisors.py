"""Supervisors on a Redis Cluster and through Sentinel (real processes, real servers).

- Two supervisors drain 3,000 runs of the fault suite's workload on a 3-master
  cluster, reached through a node that does not serve the prefix's slot; every
  invariant of ``tests/faults/invariants.py`` holds.
- A supervisor connected through three sentinels keeps working across a
  ``SENTINEL FAILOVER``: the runs in flight at the failover finish on the new
  master. With ``durability = "wait"`` no acknowledged run is lost; what the
  default ``"none"`` loses is printed, not hidden.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from redflow_mp import create_client
from tests.conftest import prefix_off_node
from tests.faults import diagnose
from tests.faults.drivers import wait_for
from tests.faults.harness import faults_harness
from tests.faults.processes import busy_children
from tests.servers import Cluster, SentinelSet

pytestmark = [pytest.mark.process, pytest.mark.timeout(420)]


def owner_client(cluster: Cluster, prefix: str) -> redis.Redis:
    """A plain client of the master serving the prefix's slot (the checker's view)."""
    node = cluster.node_for_slot(key_slot(f"{{{prefix}}}".encode()))
    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=10)


def test_two_supervisors_drain_3000_runs_on_a_cluster(
    redis_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = redis_cluster
    prefix = prefix_off_node(cluster, f"drain-{os.getpid()}", cluster.nodes[0].port)
    with faults_harness(tmp_path, prefix) as fx:
        raw = owner_client(cluster, prefix)
        assert raw.connection_pool.connection_kwargs["port"] != cluster.nodes[0].port
        sups = [fx.supervisor(cluster.url, procs=2) for _ in range(2)]
        for sup in sups:
            sup.wait_workers(2)
        prod = fx.producer(cluster.url, 3000).start()
        prod.wait(240)
        fx.assert_no_crash()
        report = fx.finish(
            raw, "cluster: 2 supervisors, 3000 runs", recovery_s=None, settle_timeout=240
        )
        report.assert_ok(all_succeeded=True)
        raw.close()


@pytest.mark.parametrize("durability", ["none", "wait"])
def test_supervisor_through_sentinel_resumes_runs_after_a_failover(
    sentinel_set: SentinelSet, tmp_path: Path, prefix: str, durability: str
) -> None:
    url = sentinel_set.url
    with faults_harness(tmp_path, prefix) as fx:
        sup = fx.supervisor(url, procs=2, args=["--durability", durability])
        sup.wait_workers(2)
        prod = fx.producer(url, 360, rate=60)
        prod.client.close()  # the harness's producer client, replaced by one with durability
        prod.client = create_client(url, prefix=prefix, default=False, durability=durability)
        prod.start()
        busy = wait_for(partial(busy_children, sup), 30, "a run in flight")
        in_flight = [run_id for _, run_id in busy]
        old = sentinel_set.master_port()
        fx.fault("redis-failover", seconds=30)
        sentinel_set.sentinels[0].call("SENTINEL", "FAILOVER", sentinel_set.service)
        new = int(
            wait_for(
                lambda: (p := sentinel_set.master_port()) != old and p,
                30,
                "the sentinels to promote",
            )
        )
        prod.wait(180)
        raw = redis.Redis(host="127.0.0.1", port=new, socket_timeout=10)
        fx.assert_no_crash()
        report = fx.finish(
            raw,
            f"sentinel failover, durability {durability}",
            recovery_s=None,
            # runs lost under "none" never settle: do not wait the full time for them
            settle_timeout=120 if durability == "wait" else 20,
            context=partial(
                diagnose.sentinel_view,
                sentinel_set.sentinels,
                sentinel_set.service,
                [Path(s.dir) / "sentinel.log" for s in sentinel_set.sentinels],
            ),
        )
        # The runs in flight at the failover resumed and finished on the new master.
        for run_id in in_flight:
            status = raw.hget(f"{{{prefix}}}:run:{run_id}", "status")
            assert status == b"succeeded", (run_id, status)
        print(
            f"\n[sentinel failover, durability {durability}] acknowledged runs lost: "
            f"{len(report.lost)} of {report.acknowledged}; producer retries {prod.retries}"
        )
        if durability == "wait":
            report.assert_ok(all_succeeded=True)
        else:
            assert not report.stuck, report.summary()  # what the new master holds settles
        raw.close()
