"""``send_event`` without an idempotency key after Redis restarted (a restart for
maintenance, a managed service's failover to the same address): the server is
up again and answers, but the client's connection was opened to the server
that went away. The request never reached any server, so nothing can have been
stored; yet the first send raised ``ConnectionError`` ("Connection closed by
server"), once per thread that had sent before, and the caller could not tell
it from a send whose reply was lost (which the docs say may have been stored).

A command sent once (``retry=False``) now first drops a connection that is
readable between requests (``Wire.freshen``): its peer closed it. The async
client holds by itself: its event loop sees the connection closed before the next
send (its test guards that)."""

from __future__ import annotations

import asyncio

from redflow_mp import Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer


def _suspended_run(url: str, prefix: str) -> str:
    """A run the server knows (queued is enough: events are stored for it)."""
    registry = Registry()

    @define_workflow("listener", queue="nobody", registry=registry)
    def listener(ctx: object) -> None:
        return None

    client = create_client(url, prefix=prefix, default=False)
    try:
        return listener.run(None, client=client).id
    finally:
        client.close()


def test_the_first_unkeyed_send_after_a_redis_restart_is_delivered(
    server: RedisServer, prefix: str
) -> None:
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        assert client.send_event("01M96WZRKMCE89ZAPC8350FCQ4", "go") is False  # connected
        server.kill()  # restarted empty (no persistence): the same address
        server.start()
        run_id = _suspended_run(server.url, prefix)
        # before: redis.exceptions.ConnectionError: Connection closed by server.
        assert client.send_event(run_id, "go", 1) is True
        assert client.redis.llen(client.keys.run_events(run_id, "go")) == 1
    finally:
        client.close()


def test_the_async_clients_first_unkeyed_send_after_a_redis_restart_is_delivered(
    server: RedisServer, prefix: str
) -> None:
    async def scenario() -> None:
        client = create_async_client(server.url, prefix=prefix)
        try:
            assert await client.send_event("01M96WZRKMCE89ZAPC8350FCQ4", "go") is False
            server.kill()
            server.start()
            run_id = _suspended_run(server.url, prefix)
            await asyncio.sleep(0.2)  # the loop runs: it sees the connection closed
            assert await client.send_event(run_id, "go", 1) is True
        finally:
            await client.aclose()

    asyncio.run(scenario())
