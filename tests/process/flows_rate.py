"""Workflows of the rate limit test (``tests/process/test_rate_limit.py``): each run
records when it started and finished (``ledger:rate`` under the test's prefix)."""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


@define_workflow("rate-job", queue="rate", max_concurrency=1000, rate_limit="100/s")
def job(ctx: Context[Any]) -> None:
    client = get_default_client()
    assert client is not None
    started = time.time()
    time.sleep(0.005)  # a run that takes a moment
    client.redis.rpush(f"{client.keys.tag}:ledger:rate", f"{started:.6f} {time.time():.6f}")
