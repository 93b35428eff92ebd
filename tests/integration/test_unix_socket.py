"""``unix://`` URLs (documented for both clients): a private redis-server that
listens on a unix socket only, reached by the sync and the async client, with a
database number and a password in the URL."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest
import redis

from redflow_mp import (
    Context,
    Registry,
    RunCanceledError,
    create_client,
    define_workflow,
    directwire,
)
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


def cmd(*args: Any) -> bytes:
    """The packed command (hiredis's stubs want one type of item per tuple)."""
    pack: Any = hiredis.pack_command
    packed: bytes = pack(args)
    return packed


PING = cmd("PING")


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


def test_a_network_error_on_a_unix_socket_is_redis_pys_and_an_enqueue_resends(
    unix_url: str,
) -> None:
    """A connection over a unix socket closed by the server (a restart, CLIENT
    KILL) or timing out fails as redis-py's ConnectionError / TimeoutError naming
    the socket's path (a unix connection has no host and port), so the enqueue's
    one resend after a network error happens and the run is made."""
    path = unix_url.split("@", 1)[1].split("?", 1)[0]
    registry = Registry()
    idle = _flows(registry)
    client = create_client(unix_url, prefix="u", registry=registry, default=False)
    killer = redis.Redis(unix_socket_path=path, password="pw", db=3)
    try:
        idle.run({"n": 1}, client=client)  # connected
        transport = client.shards[0].transport
        assert directwire.usable(transport._wire().conn) is not None  # the direct path
        assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
        handle = idle.run({"n": 2}, client=client)  # sent into the closed connection
        state = client.get_run(handle.id)
        assert state is not None and state.status == "queued"
        assert killer.client_kill_filter(_type="normal", skipme=True) >= 1
        with pytest.raises(redis.ConnectionError, match=re.escape(path)):
            transport.call_packed(PING, retry=False)
        assert transport.call_packed(PING) == b"PONG"
        transport._wire().conn._sock.settimeout(0.2)  # (the transport's is 5 s)
        with pytest.raises(redis.TimeoutError, match=re.escape(path)):
            transport.call_packed(cmd("BLPOP", "u:none", 1), retry=False)
        assert transport.call_packed(PING) == b"PONG"  # not BLPOP's late nil
    finally:
        killer.close()
        client.close()
