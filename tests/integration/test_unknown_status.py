"""A run whose ``status`` field holds a value this version does not know (a newer
version's status, a neighbour's write) is shown as it is and acted on by
nothing: ``get_run`` read it as ``failed`` (so ``retry_run``, and ``redflow runs
retry``, retried it), and ``result()`` waited on it for ever."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redflow_mp import (
    Client,
    RedflowError,
    Registry,
    ResultTimeoutError,
    RunNotResumableError,
    RunStatus,
    admin,
    define_workflow,
)
from redflow_mp.aio import create_async_client

pytestmark = pytest.mark.timeout(60)


def _paused_run(client: Client, raw: Any, registry: Registry) -> str:
    @define_workflow("from-the-future", queue="nobody-serves", registry=registry)
    def future(ctx: Any) -> None:
        return None

    run_id = client.run_by_name("from-the-future", {"n": 1}).id
    raw.hset(client.keys.run(run_id), "status", "paused")  # a newer version's status
    return run_id


def test_get_run_shows_the_stored_status_and_retry_and_resume_refuse_it(
    client: Client, raw: Any, registry: Registry
) -> None:
    run_id = _paused_run(client, raw, registry)
    state = client.get_run(run_id)
    assert state is not None
    # before: <RunStatus.FAILED: 'failed'>
    assert state.status.value == "paused", state.status
    assert state.status != RunStatus.FAILED
    assert isinstance(state.status, RunStatus)
    assert not state.status.known and not state.status.terminal
    assert RunStatus.FAILED.known
    assert str(state.status) == "paused" and f"{state.status}" == "paused"
    assert [s.value for s in RunStatus] == [
        "scheduled", "queued", "running", "suspended", "succeeded", "failed", "canceled",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="paused"):  # before: retried as a new run
        admin.retry_run(client, run_id)
    with pytest.raises(RunNotResumableError, match="paused"):
        client.resume_run(run_id)
    with pytest.raises(ValueError):  # list_runs keeps refusing names it does not know
        client.list_runs(status="paused")


def test_result_names_the_run_and_the_status_instead_of_waiting_for_ever(
    client: Client, raw: Any, registry: Registry
) -> None:
    run_id = _paused_run(client, raw, registry)
    # before: ResultTimeoutError (and with no timeout: a wait for ever)
    with pytest.raises(RedflowError, match=rf"run {run_id} has status 'paused'") as caught:
        client.handle(run_id).result(timeout=5)
    assert not isinstance(caught.value, ResultTimeoutError)


def test_async_result_names_the_status(
    client: Client, raw: Any, registry: Registry, redis_url: str, prefix: str
) -> None:
    run_id = _paused_run(client, raw, registry)

    async def main() -> None:
        aclient = create_async_client(redis_url, prefix=prefix, default=False)
        try:
            with pytest.raises(RedflowError, match="has status 'paused'"):
                await aclient.handle(run_id).result(timeout=5)
        finally:
            await aclient.aclose()

    asyncio.run(main())
