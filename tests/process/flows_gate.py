"""A workflow module whose children hold their start while the file named by
``GATE`` exists (a ``setup_in_workers`` function waiting: a slow exporter, a
slow disk), so that a test can keep a new child booting for as long as it needs."""

from __future__ import annotations

import os
import time

from redflow_mp import Context, define_workflow
from redflow_mp.tracing import setup_in_workers


@setup_in_workers
def _wait_for_the_gate() -> None:
    while os.path.exists(os.environ["GATE"]):
        time.sleep(0.02)


@define_workflow("gated", queue="p", max_concurrency=10)
def gated(ctx: Context[None]) -> int:
    return os.getpid()
