"""Workflows of the CPU-limit process test (``test_cpu_limit.py``).

``burn`` counts its executions per run in Redis (``<tag>:burns:<run id>``). Its
first execution sets its child's RLIMIT_CPU soft limit 1 s of CPU time past what
the child used so far (hard limit 20 s further, as ``prlimit --cpu=S:H`` or
systemd ``LimitCPU=S:H`` would) and burns CPU for up to 8 s of it: the kernel
sends SIGXCPU at the soft limit. It returns ``"survived"`` if it got through
(the signal was ignored), else a later execution returns ``"second"``.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


@define_workflow("burn", queue="cpu", max_concurrency=10)
def burn(ctx: Context[Any]) -> str:
    client = get_default_client()
    assert client is not None
    if client.redis.incr(f"{client.keys.tag}:burns:{ctx.run.id}") > 1:
        return "second"
    used = time.process_time()
    soft = int(used) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 20))
    x = 0
    while time.process_time() < used + 8:
        x += 1
    return "survived"
