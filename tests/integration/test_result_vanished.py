"""``result(timeout=...)`` on a run whose record Redis lost while the wait was on
(Redis restarted empty: no persistence, a failover to an empty replica): the
wait says the run does not exist, naming it, instead of running out its timeout
and saying the run "keeps running". A quick restart used to go unnoticed below
the 15 s re-read (``RESULT_RECHECK_S``): redis-py's pub/sub connection
reconnects and subscribes again by itself, so the wait never read the run again
and a ``timeout`` shorter than that raised ``ResultTimeoutError``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import RedflowError, ResultTimeoutError
from tests.helpers import client_of, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(90)

#: Below RESULT_RECHECK_S (15 s): the case the fix is for.
TIMEOUT_S = 12.0


def _scheduled_run(registry: Registry, client: Client) -> str:
    @define_workflow("vanishing", queue="vanishing", registry=registry)
    def vanishing(ctx: Context[Any]) -> None:
        return None

    # scheduled an hour ahead and no worker: it is still waited on at the restart
    return vanishing.run(None, run_at=client.server_time_ms() / 1000 + 3600, client=client).id


def _waiting(server: RedisServer, channel: str) -> bool:
    """Whether the wait subscribed to ``channel`` and then read the run (its
    ``HMGET``): it is waiting for a message now."""
    r = redis.Redis.from_url(server.url)
    try:
        if not any(n for _, n in r.pubsub_numsub(channel)):
            return False
        return any(c.get("cmd") == "hmget" for c in r.client_list())
    finally:
        r.close()


def _restart_empty(server: RedisServer) -> None:
    server.kill()
    server.start()  # same port, no data


def _check(error: BaseException | None, run_id: str) -> None:
    assert error is not None, "result() returned"
    assert not isinstance(error, ResultTimeoutError), f"{type(error).__name__}: {error}"
    assert isinstance(error, RedflowError), repr(error)
    assert f"run {run_id} does not exist" in str(error), str(error)


def test_result_of_a_run_lost_in_an_empty_restart_says_it_does_not_exist(
    server: RedisServer, prefix: str, registry: Registry
) -> None:
    with client_of(server.url, prefix, registry) as client:
        run_id = _scheduled_run(registry, client)
        got: list[BaseException | None] = []

        def wait() -> None:
            try:
                client.wait_result(run_id, timeout=TIMEOUT_S)
                got.append(None)
            except BaseException as exc:
                got.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        channel = client.keys.run_done(run_id)
        wait_until(lambda: _waiting(server, channel), 10, message="the wait waiting")
        _restart_empty(server)
        waiter.join(60)
        assert got, "the wait is still on"
        _check(got[0], run_id)


def test_async_result_of_a_run_lost_in_an_empty_restart_says_it_does_not_exist(
    server: RedisServer, prefix: str, registry: Registry
) -> None:
    with client_of(server.url, prefix, registry) as client:
        run_id = _scheduled_run(registry, client)
        channel = client.keys.run_done(run_id)

    async def main() -> BaseException | None:
        ac = create_async_client(server.url, prefix=prefix, registry=registry, default=False)
        try:
            wait = asyncio.ensure_future(ac.wait_result(run_id, timeout=TIMEOUT_S))
            while not await asyncio.to_thread(_waiting, server, channel):
                await asyncio.sleep(0.005)
            await asyncio.to_thread(_restart_empty, server)
            try:
                await wait
            except BaseException as exc:
                return exc
            return None
        finally:
            await ac.aclose()

    _check(asyncio.run(main()), run_id)
