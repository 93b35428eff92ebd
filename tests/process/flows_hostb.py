"""The workflow module of a second host of the same app (another module set:
``--module tests.process.flows_hostb`` beside a host on ``tests.process.flows``)."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("host-b", queue="hostb", max_concurrency=10)
def host_b(ctx: Context[Any]) -> int:
    return os.getpid()
