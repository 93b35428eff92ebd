"""A cron workflow firing every second (6-field expression, seconds last), for
the cron cases; loaded with ``--module tests.faults.workload_cron``."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Cron, define_workflow
from tests.faults.workload import instrumented, step

CRON_QUEUE = "fxcron"


@define_workflow("fx-tick", queue=CRON_QUEUE, max_concurrency=100, cron=[Cron("* * * * * *")])
@instrumented
def tick(ctx: Context[Any]) -> str:
    step(ctx, "t1")
    return ctx.run.cron_id or ""
