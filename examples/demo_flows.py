"""Demo workflows: a small ETL pipeline with cached steps, a child workflow and a
cron trigger. Run them under the supervisor with ``python examples/demo.py``."""

from __future__ import annotations

import hashlib
import os

import msgspec

from redflow_mp import Context, Cron, Retries, define_workflow


class Batch(msgspec.Struct):
    name: str
    rows: int = 1000


def _checksum(rows: int) -> str:
    """CPU work in pure Python (runs in its own process: no GIL contention)."""
    digest = b""
    for i in range(rows):
        digest = hashlib.sha256(digest + str(i).encode()).digest()
    return digest.hex()[:16]


@define_workflow("demo-report", queue="demo", max_concurrency=4)
def report(ctx: Context[dict[str, object]]) -> dict[str, object]:
    """Child workflow: summarise one batch."""
    return {"batch": ctx.input["name"], "pid": os.getpid()}


@define_workflow(
    "demo-etl",
    queue="demo",
    max_concurrency=4,
    schema=Batch,
    retries=Retries(max_attempts=3, initial_delay=0.5),
    cron=[Cron("*/5 * * * *", input={"name": "nightly", "rows": 500})],
)
def etl(ctx: Context[Batch]) -> dict[str, object]:
    """Extract, transform (CPU), load, then report through a child workflow."""
    rows = ctx.step.run("extract", lambda: list(range(ctx.input.rows)))
    checksum = ctx.step.run("transform", _checksum, len(rows))
    loaded = ctx.step.run("load", lambda: {"rows": len(rows), "checksum": checksum})
    summary = ctx.step.run_workflow("report", report, {"name": ctx.input.name})
    ctx.logger.info("batch %s loaded", ctx.input.name)
    return {"loaded": loaded, "report": summary, "worker_pid": os.getpid()}
