"""A cron workflow that fires every second (6-field expression, seconds last)."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Cron, define_workflow


@define_workflow("tick", queue="cron", max_concurrency=100, cron=[Cron("* * * * * *")])
def tick(ctx: Context[Any]) -> str:
    return ctx.run.cron_id or ""
