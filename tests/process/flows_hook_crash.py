"""A workflow whose ``on_failure`` hook the test SIGKILLs mid-call
(tests/process/test_on_failure_crash.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


def _hook(ctx: Any) -> None:
    """Record each call (run id, pid) in ``{tag}:hook-calls``; the first call of a
    run sleeps until the test kills its process, a later one returns at once."""
    client = get_default_client()
    assert client is not None
    key = f"{client.keys.tag}:hook-calls"
    calls = client.redis.rpush(key, f"{ctx.run.id} {os.getpid()}")
    if calls == 1:
        time.sleep(10**6)


@define_workflow("hook-killed", queue="p", max_concurrency=10, on_failure=_hook)
def hook_killed(ctx: Context[Any]) -> None:
    """Fails for good at once (no retries); its hook is killed mid-call."""
    raise RuntimeError("fails for good")
