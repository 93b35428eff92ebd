"""``result()`` takes a run's outcome from the run's record, never from the
``run-done`` message that woke it: a neighbour on the same server allowed its own
keys only but every pub/sub channel (``allchannels``: the default of an ACL user
on Redis 6.2, a common grant later) finds the runs being waited on with ``PUBSUB
CHANNELS`` and publishes a made-up success to each. ``result()`` returned that
output for a run that never ran (sync and asyncio clients alike)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from redflow_mp import (
    Context,
    Registry,
    ResultTimeoutError,
    Worker,
    create_client,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

FORGED = b'succeeded\n{"paid": "forged"}'


def _neighbour(server: RedisServer) -> redis.Redis:
    admin = server.client()
    rules = ["resetkeys", "~other:*", "allchannels", "+@all", "-@dangerous"]
    admin.execute_command("ACL", "SETUSER", "neighbour", "on", ">npw", *rules)  # type: ignore[no-untyped-call]
    admin.close()
    return redis.Redis.from_url(f"redis://neighbour:npw@127.0.0.1:{server.port}/0")


def _forge_when_waited_on(neighbour: redis.Redis, stop: threading.Event) -> list[int]:
    """Publish the forged success to every run-done channel someone listens on."""
    sent: list[int] = []

    def loop() -> None:
        while not stop.is_set():
            for name in neighbour.pubsub_channels("*run-done*"):
                sent.append(int(neighbour.publish(name, FORGED)))
            time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()
    return sent


def _flow(registry: Registry) -> Any:
    @define_workflow("pay", registry=registry)
    def pay(ctx: Context[Any]) -> dict[str, bool]:
        return {"paid": True}

    return pay


def test_a_forged_run_done_message_is_not_taken_for_the_runs_result(
    server: RedisServer, registry: Registry
) -> None:
    pay = _flow(registry)
    client = create_client(server.url, prefix="forge", registry=registry, default=False)
    stop = threading.Event()
    try:
        handle = pay.run(None, client=client)
        sent = _forge_when_waited_on(_neighbour(server), stop)
        with pytest.raises(ResultTimeoutError):
            got = handle.result(timeout=2)
            pytest.fail(f"result() returned {got!r} for a run that never ran")
        assert sum(sent) >= 1, "the neighbour's forged message reached no waiter"
        state = client.get_run(handle.id)
        assert state is not None and state.status.value == "queued"
        worker = Worker(client, registry=registry, block_timeout=0.1)
        try:
            worker.run_until_idle(timeout=20)
        finally:
            worker.close()
        assert handle.result(timeout=10) == {"paid": True}
    finally:
        stop.set()
        client.close()


def test_a_forged_run_done_message_is_not_taken_for_the_runs_result_async(
    server: RedisServer, registry: Registry
) -> None:
    pay = _flow(registry)
    sync_client = create_client(server.url, prefix="forge-aio", registry=registry, default=False)
    handle = pay.run(None, client=sync_client)
    stop = threading.Event()
    sent = _forge_when_waited_on(_neighbour(server), stop)

    async def main() -> None:
        client = create_async_client(server.url, prefix="forge-aio", registry=registry)
        try:
            with pytest.raises(ResultTimeoutError):
                got = await client.handle(handle.id).result(timeout=2)
                pytest.fail(f"result() returned {got!r} for a run that never ran")
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
        assert sum(sent) >= 1, "the neighbour's forged message reached no waiter"
        state = sync_client.get_run(handle.id)
        assert state is not None and state.status.value == "queued"
    finally:
        stop.set()
        sync_client.close()
