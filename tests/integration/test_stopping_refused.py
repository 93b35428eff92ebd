"""A worker told to stop while Redis refuses a run's finish (a key of the wrong
type: ``leases`` a string) leaves the run instead of resending the finish every
few seconds for ever: nothing of it was written, so it stays running and leased
for the reaper (under a supervisor, the parent puts it back when the child
exits). Before, a graceful stop of a supervisor waited out ``graceful_timeout``
(30 s) and then SIGKILLed the child."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Context,
    FailureContext,
    Registry,
    RunStatus,
    Worker,
    define_workflow,
)
from tests.process.conftest import wait_until


def _no_hook(ctx: FailureContext[Any]) -> None:
    pass


def _spoil(ctx: Context[Any], raw: redis.Redis, client: Client) -> None:
    raw.set(client.keys.leases, "not a redflow key")


@pytest.mark.parametrize("how", ["immediate", "riding"])
def test_a_stopping_worker_leaves_a_run_whose_finish_is_refused(
    registry: Registry,
    client: Client,
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """``immediate``: a failed run with an ``on_failure`` hook is finished at once
    (``_apply_now``); ``riding``: a succeeded run's finish rides on the next
    claim. Both are refused while ``leases`` is a string."""
    if how == "immediate":

        @define_workflow("refused", registry=registry, on_failure=_no_hook)
        def refused(ctx: Context[Any]) -> int:
            _spoil(ctx, raw, client)
            raise RuntimeError("boom")

    else:

        @define_workflow("refused", registry=registry)
        def refused(ctx: Context[Any]) -> int:
            _spoil(ctx, raw, client)
            return 1

    worker = Worker(client)
    thread = threading.Thread(target=worker.run, daemon=True)
    handle = refused.run(None, client=client)
    thread.start()
    try:
        wait_until(
            lambda: any(
                "wrong type" in r.getMessage() or "holds a string" in r.getMessage()
                for r in caplog.records
            ),
            15,
            message="the refused finish",
        )
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "the stopping worker still resends the refused finish"
        state = client.get_run(handle.id)
        assert state is not None and state.status is RunStatus.RUNNING  # nothing written
        assert any("left to be put back" in r.getMessage() for r in caplog.records)
    finally:
        raw.delete(client.keys.leases)  # lets a worker stuck before the fix end
        worker.stop()
        thread.join(15)
