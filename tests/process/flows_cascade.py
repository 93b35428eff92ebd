"""Workflows of the cancel-cascade process test: a parent suspended on three
children of a workflow with two slots (two run, one waits for a slot), each
child running until it is asked to cancel."""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("cc-child", queue="cc", max_concurrency=2)
def cc_child(ctx: Context[Any]) -> int:
    deadline = time.monotonic() + 600
    while not ctx.cancelled.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.raise_if_cancelled()
    return int(ctx.input)


@define_workflow("cc-parent", queue="cc", max_concurrency=10)
def cc_parent(ctx: Context[Any]) -> list[int]:
    return ctx.step.run_workflows("kids", cc_child, [1, 2, 3])
