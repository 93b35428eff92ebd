"""A module whose every forked child dies at once: a boot failure, as when a
library breaks after fork. The parent itself imports it fine."""

from __future__ import annotations

import os
from typing import Any

from redflow_mp import Context, define_workflow

os.register_at_fork(after_in_child=lambda: os._exit(3))


@define_workflow("never-runs", queue="bootfail")
def never_runs(ctx: Context[Any]) -> None:
    return None
