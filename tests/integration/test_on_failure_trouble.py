"""``on_failure`` of a run the supervisor failed itself (crash cap, a timeout on
the last attempt) is called by a short-lived helper process, through
:func:`redflow_mp.executor.on_failure_of_stored_run`, which reads the run first.
Redis trouble that passes (here ``BUSY`` while another program's script runs)
at that moment lost the hook for good (the helper logged and exited); the read
now waits it out (the hook itself is never called twice by this)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Context, FailureContext, Registry, Worker, create_client, define_workflow
from redflow_mp.executor import on_failure_of_stored_run
from tests.integration.test_results_busy import _spin_in_background
from tests.redis_server import RedisServer, busy_threshold_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def test_on_failure_of_a_stored_run_waits_out_busy_replies(
    server: RedisServer, registry: Registry
) -> None:
    calls: list[str] = []

    def hook(fctx: FailureContext[Any]) -> None:
        calls.append(fctx.error.type)

    @define_workflow("fails-with-hook", registry=registry, on_failure=hook)
    def flow(ctx: Context[Any]) -> None:
        raise ValueError("its own failure")

    client = create_client(server.url, prefix="hook-busy", registry=registry, default=False)
    try:
        handle = flow.run(None, client=client)
        worker = Worker(client, registry=registry, block_timeout=0.1)
        try:
            worker.run_until_idle(timeout=20)
        finally:
            worker.close()
        assert calls == ["ValueError"]  # the worker's own call
        spinner = _spin_in_background(server)
        # before: redis.exceptions.ResponseError: BUSY Redis is busy running a script
        assert on_failure_of_stored_run(client, registry, handle.id) is True
        assert calls == ["ValueError", "ValueError"]
        spinner.join(30)
    finally:
        client.close()
