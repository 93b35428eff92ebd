"""A cron workflow in a timezone only some hosts' tzdata has (test_cron_leader.py
puts a copy of UTC under :data:`ZONE` on this host's ``PYTHONTZPATH``)."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Cron, define_workflow

ZONE = "Redflow_Test/Newer_Zone"


@define_workflow("zoned", queue="zoned", cron=[Cron("* * * * * *", timezone=ZONE)])
def zoned(ctx: Context[Any]) -> str:
    return ctx.run.cron_id or ""
