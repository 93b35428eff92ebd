"""``unix://`` URLs (documented for both clients): a private redis-server that
listens on a unix socket only, reached by the sync and the async client, with a
database number and a password in the URL."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Context, Registry, RunCanceledError, create_client, define_workflow
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def unix_url() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="redflow-unix-")
    path = os.path.join(folder, "redis.sock")
    server = RedisServer(["--unixsocket", path, "--unixsocketperm", "700"], password="pw")
    server.start()
    try:
        yield f"unix://:pw@{path}?db=3"
    finally:
        server.cleanup()
        os.rmdir(folder)


def _flows(registry: Registry) -> Any:
    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> None:
        return None

    return idle


def test_the_sync_client_over_a_unix_socket(unix_url: str) -> None:
    registry = Registry()
    idle = _flows(registry)
    client = create_client(unix_url, prefix="u", registry=registry, default=False)
    try:
        handle = idle.run({"n": 1}, client=client)
        state = client.get_run(handle.id)
        assert state is not None and state.status == "queued"
        assert client.cancel_run(handle.id)
        with pytest.raises(RunCanceledError):
            handle.result(timeout=10)
    finally:
        client.close()


def test_the_async_client_over_a_unix_socket(unix_url: str) -> None:
    registry = Registry()
    idle = _flows(registry)

    async def main() -> None:
        ac = create_async_client(unix_url, prefix="u", registry=registry, default=False)
        try:
            handle = await idle.arun({"n": 1}, client=ac)
            waiting = asyncio.ensure_future(handle.result(timeout=10))
            state = await ac.get_run(handle.id)
            assert state is not None and state.status == "queued"
            assert await handle.cancel()
            with pytest.raises(RunCanceledError):
                await waiting
            assert await ac.transport.call("CLIENT", "INFO")  # the wire is on the socket
        finally:
            await ac.aclose()

    asyncio.run(main())
