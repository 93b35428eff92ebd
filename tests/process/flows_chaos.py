"""Workflows of the chaos process tests (``tests/process/test_chaos_*.py``), run
under a real supervisor with default settings."""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow


# The default max_concurrency (1): one run at a time holds the workflow's slot.
@define_workflow("gated", queue="chaos")
def gated(ctx: Context[Any]) -> str:
    """Sleeps durably ``input`` seconds (suspended, holding the slot), then ends."""
    seconds = float(ctx.input or 0)
    if seconds > 0:
        ctx.step.sleep("nap", seconds)
    return ctx.step.run("done", lambda: "done")


@define_workflow("gated-parent", queue="chaos", max_concurrency=100)
def gated_parent(ctx: Context[Any]) -> str:
    """Starts a ``gated`` child sleeping ``input`` seconds and waits for it."""
    return str(ctx.step.run_workflow("child", gated, ctx.input))


def _work(seconds: float) -> str:
    time.sleep(seconds)
    return "worked"


@define_workflow("busy", queue="chaos", max_concurrency=10)
def busy(ctx: Context[Any]) -> str:
    """One step that works ``input`` seconds (the run holds its lease meanwhile)."""
    return str(ctx.step.run("work", _work, float(ctx.input)))


@define_workflow("quick", queue="chaos", max_concurrency=100)
def quick(ctx: Context[Any]) -> str:
    """One short step; returns ``input``."""
    return str(ctx.step.run("one", lambda: str(ctx.input)))
