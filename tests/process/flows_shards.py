"""Workflows of ``tests/process/test_shards_process.py`` (run with ``--shards 3``):
jobs placed on each of the three shards (``zlib.crc32(name) % 3``: shard-job-b
on 0, shard-job-c on 1, shard-job-a on 2) that record each execution in a
ledger, and a parent on shard 1 whose child runs on shard 2."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


def _record(ctx: Context[Any]) -> None:
    client = get_default_client()
    assert client is not None
    client.redis.rpush(f"{client.keys.tag}:ledger", ctx.run.id)


@define_workflow("shard-job-a", queue="shq", max_concurrency=50)
def job_a(ctx: Context[Any]) -> int:
    _record(ctx)
    return int(ctx.input)


@define_workflow("shard-job-b", queue="shq", max_concurrency=50)
def job_b(ctx: Context[Any]) -> int:
    _record(ctx)
    return int(ctx.input)


@define_workflow("shard-job-c", queue="shq", max_concurrency=50)
def job_c(ctx: Context[Any]) -> int:
    _record(ctx)
    return int(ctx.input)


@define_workflow("shard-parent", queue="shq")
def parent(ctx: Context[Any]) -> int:
    _record(ctx)
    return int(ctx.step.run_workflow("child", job_a, int(ctx.input))) + 1
