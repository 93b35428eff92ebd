"""A workflow module that takes seconds to import (a heavy framework, a slow
disk): the supervisor's start-up window in which signals must already behave.
It creates the file named by ``SLOWSTART_MARKER`` when its import begins."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from redflow_mp import Context, define_workflow

Path(os.environ["SLOWSTART_MARKER"]).touch()
time.sleep(3.0)


@define_workflow("slowstart", queue="p", max_concurrency=10)
def slowstart(ctx: Context[Any]) -> int:
    return os.getpid()
