"""Set-up shared by the ``durability`` tests (``test_durability*.py``): durable
clients (sync and async) for one prefix, a trivial workflow, and the count of
runs a server holds."""

from __future__ import annotations

from typing import Any

from redflow_mp import Registry, create_client, define_workflow
from redflow_mp.aio import AsyncClient, create_async_client
from redflow_mp.client import Client
from tests.redis_server import RedisServer


def durable_client(
    url: str, prefix: str, registry: Registry, wait_ms: int, durability: str = "wait"
) -> Client:
    """A client (not the default one) whose run-state writes wait for ``durability``
    (WAIT or WAITAOF) for at most ``wait_ms``."""
    return create_client(
        url,
        prefix=prefix,
        registry=registry,
        default=False,
        durability=durability,
        durability_wait_ms=wait_ms,
    )


def durable_async_client(url: str, prefix: str, registry: Registry, wait_ms: int) -> AsyncClient:
    """:func:`durable_client`'s async twin (``durability = "wait"``)."""
    return create_async_client(
        url,
        prefix=prefix,
        registry=registry,
        default=False,
        durability="wait",
        durability_wait_ms=wait_ms,
    )


def trivial_flow(registry: Registry, name: str, queue: str | None = None) -> Any:
    """A workflow ``name`` returning 1 (on ``queue``: one no worker serves)."""

    @define_workflow(name, queue=queue or "default", registry=registry)
    def flow(ctx: object) -> int:
        return 1

    return flow


def run_count(master: RedisServer, prefix: str) -> int:
    """How many runs (``run:<id>`` hashes) ``master`` holds under ``prefix``."""
    r = master.client()
    try:
        keys = [k.decode() if isinstance(k, bytes) else k for k in r.keys(f"{{{prefix}}}:run:*")]
        return len([k for k in keys if k.count(":") == 2])
    finally:
        r.close()
