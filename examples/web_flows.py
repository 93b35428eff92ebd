"""Workflows of the web example (``examples/fastapi_app.py``): the web application
enqueues them and awaits their results, a supervisor runs them::

    redflow-supervisor --app web --procs 2 --module examples.web_flows

Both import this module, so the web process has the definitions: a request with
input that does not match the schema is refused before anything is written.
"""

from __future__ import annotations

import hashlib

import msgspec

from redflow_mp import Context, NonRetriableError, Retries, define_workflow


class ReportRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    rows: int = 1000


def _checksum(rows: int) -> str:
    digest = b""
    for i in range(rows):
        digest = hashlib.sha256(digest + str(i).encode()).digest()
    return digest.hex()[:16]


@define_workflow(
    "web-report",
    queue="web",
    max_concurrency=8,
    schema=ReportRequest,
    retries=Retries(max_attempts=2, initial_delay=0.2),
)
def report(ctx: Context[ReportRequest]) -> dict[str, object]:
    """Two cached steps: a checksum over ``rows`` (CPU work), then a summary."""
    if ctx.input.rows < 0:
        raise NonRetriableError(f"rows must be >= 0, not {ctx.input.rows}")
    checksum = ctx.step.run("checksum", _checksum, ctx.input.rows)
    return ctx.step.run(
        "summary", lambda: {"name": ctx.input.name, "rows": ctx.input.rows, "checksum": checksum}
    )


@define_workflow("web-urgent-report", queue="web", max_concurrency=8, priority=9)
def urgent(ctx: Context[dict[str, object]]) -> dict[str, object]:
    """Claimed before every queued ``web-report`` (priority 9)."""
    return {"urgent": True, "name": ctx.input.get("name")}
