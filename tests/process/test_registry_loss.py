"""Redis loses what a supervisor synced (FLUSHALL, a restart without persistence,
a failover to an empty replica) while the supervisor runs: it notices and
writes its registry again, so crons fire again and ``run_by_name`` from a client
without the code finds the workflows, without a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry, create_client
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def _drop_namespace(raw: redis.Redis, prefix: str) -> int:
    """Delete every key of ``prefix`` (the FLUSHALL of a shared test server)."""
    keys = list(raw.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    return int(raw.delete(*keys)) if keys else 0


def test_a_supervisor_writes_its_registry_again_after_redis_lost_it(
    supervisor: Callable[..., Supervisor],
    client: Client,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
) -> None:
    sup = supervisor(procs=1, modules=["tests.process.flows_cron", "tests.process.flows"])
    sup.wait_workers(1)
    k = client.keys
    wait_until(lambda: client.list_runs(workflow="tick", limit=1), 20, message="a first cron fire")

    assert _drop_namespace(raw, prefix) > 0
    lost_ms = client.server_time_ms()
    assert not raw.exists(k.workflow("tick"), k.workflow("pid"))

    # Within a few seconds: the metadata and cron entries are back, crons fire again.
    wait_until(lambda: raw.exists(k.workflow("tick")), 15, message="the metadata written again")
    assert raw.exists(k.workflow("pid")), "every workflow of the registry comes back"
    assert raw.zcard(k.cron_next) >= 1 and raw.hlen(k.cron_def) >= 1
    wait_until(
        lambda: [r for r in client.list_runs(workflow="tick", limit=10) if r.created_at > lost_ms],
        10,
        message="a cron fire after the loss",
    )
    assert "are gone from Redis" in sup.log()

    # A client without the code enqueues by name and the supervisor runs it.
    bare = create_client(redis_url, prefix=prefix, registry=Registry())
    try:
        handle = bare.run_by_name("pid", None)
        assert isinstance(handle.result(timeout=20), int)
    finally:
        bare.close()
