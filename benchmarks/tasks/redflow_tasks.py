"""redflow-mp workflows for the benchmark (imported by ``redflow-supervisor --module``).

Only the public API of ``redflow_mp`` is used (SPEC §2). Every workflow sits
on the ``bench`` queue with a high ``max_concurrency`` (the default is 1, which
would serialise the benchmark).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.tasks import common
from redflow_mp import Context, define_workflow

LIMIT = 1000


def _nothing() -> int:
    return 1


@define_workflow("bench-noop", queue=common.QUEUE, max_concurrency=LIMIT)
def noop(ctx: Context[Any]) -> None:
    common.handler_call()
    common.count_done()


@define_workflow("bench-rt", queue=common.QUEUE, max_concurrency=LIMIT)
def rt(ctx: Context[Any]) -> Any:
    common.handler_call()
    return ctx.input["v"]


@define_workflow("bench-cpu", queue=common.QUEUE, max_concurrency=LIMIT)
def cpu(ctx: Context[Any]) -> None:
    common.cpu_task(int(ctx.input["iterations"]))


@define_workflow("bench-steps", queue=common.QUEUE, max_concurrency=LIMIT)
def steps(ctx: Context[Any]) -> None:
    count = int(ctx.input["steps"])
    start = time.perf_counter()
    for i in range(count):
        ctx.step.run(f"s{i}", _nothing)
    common.record_steps(time.perf_counter() - start)


@define_workflow("bench-child", queue=common.QUEUE, max_concurrency=LIMIT)
def child(ctx: Context[Any]) -> None:
    common.count_done()


@define_workflow("bench-fanout", queue=common.QUEUE, max_concurrency=LIMIT)
def fanout(ctx: Context[Any]) -> None:
    """W6 parent: ``emit_workflow`` ``n`` children, or ``run_workflow`` them in turn."""
    mode = str(ctx.input["mode"])
    n = int(ctx.input["n"])
    if mode == "emit":
        for i in range(n):
            ctx.step.emit_workflow(f"e{i}", child, {})
    else:
        for i in range(n):
            ctx.step.run_workflow(f"r{i}", child, {}, timeout=60)
    common.mark_parent_done()
