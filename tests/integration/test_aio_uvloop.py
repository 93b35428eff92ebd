"""The asyncio client on uvloop's event loop (what ``uvicorn[standard]`` runs a
FastAPI application on).

uvloop's transports are not subclasses of ``asyncio.Transport``: the command
and pub/sub connections' protocol (``aio_resp.Resp``) asserted they were, the
assertion failed inside ``connection_made`` (logged by the loop), and every hot
call then failed with a bare ``AssertionError`` (enqueue, cancel, a result
wait). Its closing from another loop is in ``test_aio_close_elsewhere.py`` and
``test_aio_close_threads.py`` (both run on asyncio's loop and on uvloop's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import ResultTimeoutError
from tests.helpers import new_loop, wait_until

pytestmark = pytest.mark.timeout(60)


def test_the_async_client_runs_on_uvloop(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    name = f"uv-{prefix[-12:]}"

    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        ac = create_async_client(
            f"{redis_url}?client_name={name}", prefix=prefix, registry=registry, default=False
        )
        async with ac:
            handle = await idle.arun(None, client=ac)  # the hot path: AssertionError before
            with pytest.raises(ResultTimeoutError):
                await handle.result(timeout=0.05)  # the pub/sub connection
            state = await ac.get_run(handle.id)
            assert state is not None and state.status == "queued"
            assert await ac.cancel_run(handle.id)
            state = await ac.get_run(handle.id)
            assert state is not None and state.status == "canceled"
            assert len([c for c in raw.client_list() if c.get("name") == name]) >= 3

    with asyncio.Runner(loop_factory=lambda: new_loop("uvloop")) as runner:
        runner.run(main())
    wait_until(
        lambda: not [c for c in raw.client_list() if c.get("name") == name],
        message="the server to see them all go",
    )
