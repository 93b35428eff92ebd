"""The workflow module of an app whose workers serve ``default`` (beside another app
on the same prefix: tests/process/test_empty_restart.py)."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, define_workflow


@define_workflow("on-default", queue="default", max_concurrency=10)
def on_default(ctx: Context[Any]) -> int:
    return os.getpid()
