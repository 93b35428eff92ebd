"""A Redis Cluster that answers ``CLUSTERDOWN`` for longer than a command's
patience (:data:`redflow_mp.connection.CLUSTER_PATIENCE`): Redis trouble that
is not the run's fault, ridden out like a connection lost (``TRANSIENT_ERRORS``),
never charged as an attempt of a run and never the end of a worker.

The cluster has the default ``cluster-require-full-coverage yes``: while one
master (not the prefix's) is stopped and marked failed, every node answers
``CLUSTERDOWN`` for every key, the prefix's too.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.connection import CLUSTER_PATIENCE
from tests.conftest import prefix_off_node
from tests.helpers import WorkerPool
from tests.servers import Cluster, wait_for

pytestmark = pytest.mark.timeout(150)


def _cluster_state(port: int) -> str:
    r = redis.Redis(port=port, socket_timeout=2)
    try:
        execute: Callable[..., Any] = r.execute_command  # untyped in redis-py
        info = execute("CLUSTER", "INFO")
    finally:
        r.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return text.split("cluster_state:", 1)[1].split()[0]


def test_clusterdown_past_the_patience_is_ridden_out_not_charged_to_the_run(
    cluster_factory: Callable[..., Cluster], registry: Registry
) -> None:
    """Default lease (5 s), one attempt: a step's write meets CLUSTERDOWN for
    longer than CLUSTER_PATIENCE (10 s). Before the fix the ClusterDownError
    that ended the patience was no transient error: it went into the handler and
    failed the run on its one attempt (``RunFailedError ... ClusterDownError``).
    Now the write rides it out and the run succeeds on its first attempt."""
    cluster = cluster_factory()
    stopped = cluster.masters[1]
    prefix = prefix_off_node(cluster, f"cdown-{os.getpid()}", stopped.port)
    client = create_client(cluster.url, prefix=prefix, registry=registry, default=False)
    assert stopped.proc is not None
    pid = stopped.proc.pid
    down_s = CLUSTER_PATIENCE + 4.0  # past the patience, within the ride-out (15 s)
    live = [n for n in cluster.masters if n is not stopped]

    @define_workflow("through-clusterdown", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        def first() -> str:
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(down_s, os.kill, (pid, signal.SIGCONT)).start()
            wait_for(
                lambda: all(_cluster_state(n.port) == "fail" for n in live),
                20,
                "cluster_state:fail on the live masters",
            )
            return "recorded"

        return str(ctx.step.run("first", first))

    pool: WorkerPool | None = None
    try:
        client.sync_registry(registry, app="t")
        handle = flow.run(None, client=client)
        pool = WorkerPool(client)
        pool.start(client)  # default lease_ms
        began = time.monotonic()
        # before: RunFailedError: ... ClusterDownError: The cluster is down
        assert handle.result(timeout=90) == "recorded"
        assert time.monotonic() - began > CLUSTER_PATIENCE  # the outage was met
        state = client.get_run(handle.id)
        assert state is not None and state.attempt == 1
        assert pool.errors == []
        pool.stop_all()
        pool = None
    finally:
        if pool is not None:
            pool.stop_all()
        if stopped.proc is not None and stopped.proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
        client.close()
