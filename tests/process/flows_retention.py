"""Workflows of the retention keyspace audit (test_retention_keyspace.py): a
realistic mix of outcomes, so that every key family a run can create exists."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, Cron, NonRetriableError, Retries, define_workflow


@define_workflow("rk-ok", queue="rk")
def rk_ok(ctx: Context[Any]) -> Any:
    return ctx.input


@define_workflow("rk-fail", queue="rk")
def rk_fail(ctx: Context[Any]) -> None:
    raise NonRetriableError("no")


@define_workflow(
    "rk-retry",
    queue="rk",
    retries=Retries(max_attempts=3, initial_delay=0.05, multiplier=2.0, jitter=0.1),
)
def rk_retry(ctx: Context[Any]) -> int:
    ctx.step.run("a", lambda: 1)
    if ctx.run.attempt < 3:
        raise RuntimeError(f"attempt {ctx.run.attempt}")
    return ctx.run.attempt


@define_workflow("rk-steps", queue="rk")
def rk_steps(ctx: Context[Any]) -> int:
    n = int(ctx.input)
    for i in range(n):
        ctx.step.run(f"s{i}", lambda i=i: i)
    return n


@define_workflow("rk-sleep", queue="rk", max_concurrency=100)
def rk_sleep(ctx: Context[Any]) -> str:
    ctx.step.sleep("nap", float(ctx.input))
    return "woke"


@define_workflow("rk-event", queue="rk", max_concurrency=100)
def rk_event(ctx: Context[Any]) -> Any:
    return ctx.step.wait_for_event("w", "go", timeout=float(ctx.input))


@define_workflow("rk-child", queue="rk", max_concurrency=100)
def rk_child(ctx: Context[Any]) -> Any:
    return ctx.input


@define_workflow("rk-parent", queue="rk", max_concurrency=100)
def rk_parent(ctx: Context[Any]) -> Any:
    a = ctx.step.run_workflow("c1", rk_child, 1)
    ctx.step.emit_workflow("e1", "rk-child", 2)
    return a


@define_workflow("rk-cron", queue="rk", cron=[Cron("* * * * * *")])
def rk_cron(ctx: Context[Any]) -> int:
    return 1


if os.environ.get("RK_GONE") != "1":

    @define_workflow("rk-gone", queue="rk-gone-q")
    def rk_gone(ctx: Context[Any]) -> int:
        return 1


@define_workflow("rk-longchild", queue="rk", max_concurrency=100)
def rk_longchild(ctx: Context[Any]) -> str:
    ctx.step.sleep("nap", 3600)
    return "late"


@define_workflow("rk-waitparent", queue="rk", max_concurrency=100)
def rk_waitparent(ctx: Context[Any]) -> Any:
    return ctx.step.run_workflows("kids", rk_longchild, [0, 1, 2])


@define_workflow("rk-gate", queue="rk", max_concurrency=1, rate_limit="20/s")
def rk_gate(ctx: Context[Any]) -> int:
    import time

    time.sleep(0.05)
    return 1
