"""A drain of no-op runs that count their executions: each run adds 1 to its
own field of ``execs`` (one Redis call of its own, as real handlers make), so a
test can tell a lost run (no execution, or not succeeded) from one executed
twice (a count above 1)."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


@define_workflow("drain-ledger", queue="dl")
def drain_ledger(ctx: Context[Any]) -> None:
    client = get_default_client()
    assert client is not None
    client.redis.hincrby(f"{client.keys.tag}:execs", ctx.run.id, 1)
