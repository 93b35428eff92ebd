"""A module whose import burns 0.5 s of CPU time (``test_parent_cpu_limit.py``).

The supervisor's parent imports the workflow modules at start and again at each
HUP (a reload): a few HUPs make the parent itself use CPU time, so that the
kernel's SIGXCPU reaches it at an RLIMIT_CPU soft limit the test sets.
"""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow

_start = time.process_time()
while time.process_time() - _start < 0.5:
    pass


@define_workflow("parent-burn-noop", queue="p", max_concurrency=10)
def noop(ctx: Context[Any]) -> None:
    return None
