"""A client's first call meeting another program's long script: the server
answers ``BUSY`` to the ``INFO server`` the client sends before its first script
call (nothing is applied), and the caller gets the :class:`RedisBusyError` every
later script call gets, not a raw ``ResponseError``.

The server is a private ``redis-server`` (its threshold lowered to 100 ms, so a
2 s script gives ~1.9 s of ``BUSY`` replies)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Context, RedisBusyError, Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import TRANSIENT_ERRORS
from tests.integration.test_results_busy import _spin_in_background
from tests.redis_server import RedisServer, busy_threshold_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def _flow(registry: Registry) -> Any:
    @define_workflow("first-busy", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        return "done"

    return flow


def test_a_fresh_clients_first_enqueue_meeting_busy_is_a_redis_busy_error(
    server: RedisServer, registry: Registry
) -> None:
    flow = _flow(registry)
    client = create_client(server.url, prefix="first-busy", registry=registry, default=False)
    try:
        spinner = _spin_in_background(server)
        with pytest.raises(TRANSIENT_ERRORS) as caught:
            flow.run(None, client=client)
        assert isinstance(caught.value, RedisBusyError), repr(caught.value)
        assert "nothing was changed" in str(caught.value)
        spinner.join(30)
        handle = flow.run(None, client=client)  # the same client, once the script ended
        assert [r.id for r in client.list_runs(workflow="first-busy")] == [handle.id]
    finally:
        client.close()


def test_a_fresh_async_clients_first_enqueue_meeting_busy_is_a_redis_busy_error(
    server: RedisServer, registry: Registry
) -> None:
    flow = _flow(registry)

    async def main() -> None:
        client = create_async_client(
            server.url, prefix="first-busy-aio", registry=registry, default=False
        )
        try:
            spinner = await asyncio.to_thread(_spin_in_background, server)
            with pytest.raises(TRANSIENT_ERRORS) as caught:
                await flow.arun(None, client=client)
            assert isinstance(caught.value, RedisBusyError), repr(caught.value)
            assert "nothing was changed" in str(caught.value)
            await asyncio.to_thread(spinner.join, 30)
            handle = await flow.arun(None, client=client)
            runs = await client.list_runs(workflow="first-busy")
            assert [r.id for r in runs] == [handle.id]
        finally:
            await client.aclose()

    asyncio.run(main())
