"""The fan-out the fan-out benchmarks measure (:mod:`benchmarks.fanout_cpu`,
:mod:`benchmarks.fanout_phases`): a private redis-server with default settings,
a parent workflow that runs ``n`` children with ``step.run_workflows``, and the
retention sweep of the finished family. One definition, so both benchmarks
measure the same workload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from redflow_mp import Client, Context, Registry, Workflow, create_client, define_workflow
from redflow_mp.maintenance import sweep_retention
from tests.redis_server import RedisServer


@dataclass
class FanOut:
    server: RedisServer
    raw: redis.Redis
    client: Client
    #: ``parent.run(n)`` fans out to ``n`` children and returns ``n``.
    parent: Workflow[Any, int]


def start_fanout() -> FanOut:
    """A started redis-server and a client whose registry holds the fan-out."""
    server = RedisServer().start()
    raw = redis.Redis.from_url(server.url)
    registry = Registry()

    @define_workflow("fan-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return int(ctx.input)

    @define_workflow("fan-parent", registry=registry)
    def parent(ctx: Context[Any]) -> int:
        return len(ctx.step.run_workflows("kids", child, list(range(int(ctx.input)))))

    client = create_client(server.url, registry=registry)
    return FanOut(server=server, raw=raw, client=client, parent=parent)


def sweep_all(client: Client) -> int:
    """Sweep retention one run at a time until nothing is left; the runs removed."""
    removed = 0
    while got := sweep_retention(client, 1):
        removed += got
    return removed
