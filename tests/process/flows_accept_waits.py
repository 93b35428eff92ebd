"""Workflows of the acceptance tests of durable waits under a real supervisor."""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("aw-slow-child", queue="aw", max_concurrency=10)
def aw_slow_child(ctx: Context[Any]) -> str:
    time.sleep(float(ctx.input))
    return "child-done"


@define_workflow("aw-timed-sleeper", queue="aw", max_concurrency=10, timeout=1.5)
def aw_timed_sleeper(ctx: Context[Any]) -> str:
    ctx.step.sleep("nap", float(ctx.input))
    return "slept"


@define_workflow("aw-timed-parent", queue="aw", max_concurrency=10, timeout=1.5)
def aw_timed_parent(ctx: Context[Any]) -> str:
    return str(ctx.step.run_workflow("kid", aw_slow_child, float(ctx.input)))
