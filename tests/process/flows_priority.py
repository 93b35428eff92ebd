"""Workflows of the priority test (``tests/process/test_priority.py``): a gate that
keeps the only child busy until the test opens it, and jobs that record the
order they run in (``ledger:order`` under the test's prefix)."""

from __future__ import annotations

import time
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client


def _r() -> tuple[Any, str]:
    client = get_default_client()
    assert client is not None
    return client.redis, client.keys.tag


@define_workflow("prio-gate", queue="prio")
def gate(ctx: Context[Any]) -> None:
    """Busy until the test sets ``gate:open`` (polled: the handler is the test's clock)."""
    r, tag = _r()
    r.set(f"{tag}:gate:started", 1)
    deadline = time.monotonic() + 60
    while not r.exists(f"{tag}:gate:open") and time.monotonic() < deadline:
        time.sleep(0.005)


@define_workflow("prio-job", queue="prio", max_concurrency=100)
def job(ctx: Context[Any]) -> None:
    r, tag = _r()
    r.rpush(f"{tag}:ledger:order", ctx.input["tag"])


@define_workflow("prio-urgent", queue="prio", max_concurrency=100, priority=9)
def urgent(ctx: Context[Any]) -> None:
    r, tag = _r()
    r.rpush(f"{tag}:ledger:order", ctx.input["tag"])
