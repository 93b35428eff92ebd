"""``RunHandle.result()`` rides out Redis trouble that passes by itself, not only
a lost connection: while another program's script runs past
``busy-reply-threshold`` the server answers ``BUSY`` to every command (nothing
is applied), and a wait meeting it is the same wait once the script ends.

The server is a private ``redis-server`` (its threshold lowered to 100 ms, so a
2 s script gives ~1.9 s of ``BUSY`` replies)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, Worker, create_client, define_workflow
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer, busy_threshold_server
from tests.servers import wait_for

pytestmark = pytest.mark.timeout(60)

_SPIN = """
local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1
"""
SPIN_MS = 2000


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def _busy(r: redis.Redis) -> bool:
    try:
        r.ping()
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def _spin_in_background(server: RedisServer, spin_ms: int = SPIN_MS) -> threading.Thread:
    """A neighbour's script of ``spin_ms``, started now; returns once Redis answers
    BUSY. A SCRIPT KILL may end it sooner (it writes nothing)."""
    neighbour = redis.Redis.from_url(server.url, socket_timeout=spin_ms / 1000 + 30)

    def spin() -> None:
        try:
            neighbour.eval(_SPIN, 0, spin_ms)
        except redis.ConnectionError:
            pass  # the server was stopped first (a test that failed)
        except redis.ResponseError as exc:
            if "killed" not in str(exc).lower():
                raise
        finally:
            neighbour.close()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    probe = server.client()
    try:
        wait_for(lambda: _busy(probe), 10, "BUSY replies")
    finally:
        probe.close()
    return thread


def _finished_run(server: RedisServer, registry: Registry, prefix: str) -> str:
    @define_workflow("busy-result", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        return "done"

    client = create_client(server.url, prefix=prefix, registry=registry, default=False)
    try:
        handle = flow.run(None, client=client)
        worker = Worker(client, registry=registry, block_timeout=0.1)
        try:
            worker.run_until_idle(timeout=20)
        finally:
            worker.close()
        assert client.get_run(handle.id).status == "succeeded"  # type: ignore[union-attr]
        return handle.id
    finally:
        client.close()


def test_result_rides_out_busy_replies(server: RedisServer, registry: Registry) -> None:
    """Before: ``result()`` raised the server's ``BUSY`` reply to the producer
    (``ResponseError: BUSY Redis is busy running a script``) though the run had
    succeeded."""
    run_id = _finished_run(server, registry, "busy-sync")
    client = create_client(server.url, prefix="busy-sync", registry=registry, default=False)
    try:
        spinner = _spin_in_background(server)
        # before: redis.exceptions.ResponseError: BUSY Redis is busy running a script
        assert client.handle(run_id).result(timeout=30) == "done"
        spinner.join(30)
    finally:
        client.close()


def test_async_result_rides_out_busy_replies(server: RedisServer, registry: Registry) -> None:
    """The async client's ``result()`` likewise (before: the ``BUSY`` error)."""
    run_id = _finished_run(server, registry, "busy-async")

    async def main() -> Any:
        client = create_async_client(
            server.url, prefix="busy-async", registry=registry, default=False
        )
        try:
            spinner = await asyncio.to_thread(_spin_in_background, server)
            # before: redis.exceptions.ResponseError: BUSY Redis is busy running a script
            out = await client.handle(run_id).result(timeout=30)
            await asyncio.to_thread(spinner.join, 30)
            return out
        finally:
            await client.aclose()

    assert asyncio.run(main()) == "done"
