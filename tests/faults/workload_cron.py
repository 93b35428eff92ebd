"""A cron workflow firing every second (6-field expression, seconds last), for
the cron cases; loaded with ``--module tests.faults.workload_cron``."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Cron, define_workflow
from tests.faults.workload import instrumented, step

CRON_QUEUE = "fxcron"


# Priority 9: a fire's run starts at the next free process, ahead of the
# producer's backlog. At the default priority it waited behind every older run of
# that backlog (claims take the oldest first over all queues), and while it
# waited the leader skipped the next fire times (an entry has at most one run
# waiting to start): on a loaded machine, where two processes fell behind the
# producer, the new leader created no run for 20 s (test_clock_skew_between_two_
# supervisors: "timed out after 20 s waiting for fires led by the other one").
@define_workflow(
    "fx-tick", queue=CRON_QUEUE, max_concurrency=100, priority=9, cron=[Cron("* * * * * *")]
)
@instrumented
def tick(ctx: Context[Any]) -> str:
    step(ctx, "t1")
    return ctx.run.cron_id or ""
