"""Helpers of the tests that run ``shards > 1`` on one redis-server: a sharded
client, a workflow name placed on a chosen shard, and a run written straight
into a chosen shard with that shard's own scripts (as the data plane does), so
a test does not depend on how enqueue picks the shard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redflow_mp import Client, Registry, create_client
from redflow_mp.ids import new_run_id
from redflow_mp.shardset import Shard

__all__ = ["put", "sharded_client", "workflow_in"]


@contextmanager
def sharded_client(
    redis_url: str, prefix: str, registry: Registry, shards: int
) -> Iterator[Client]:
    """A client of ``shards`` shards on the test's prefix (not the default client)."""
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=shards)
    try:
        yield c
    finally:
        c.close()


def workflow_in(client: Client, index: int, base: str = "wf") -> str:
    """The first workflow name ``<base><i>`` that ``client`` places on shard ``index``."""
    return next(
        f"{base}{i}" for i in range(1000) if client.shard_of_workflow(f"{base}{i}").index == index
    )


def put(shard: Shard, workflow: str, queue: str = "q", run_at_ms: int = 0) -> str:
    """Enqueue one run in ``shard`` with its own scripts; its id names the shard."""
    run_id, created = shard.scripts.enqueue(
        shard.run_id(new_run_id()), workflow, queue, b"1", 1, run_at_ms, "", 0, "", "", None, None
    )
    assert created
    return run_id
