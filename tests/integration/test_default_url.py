"""A client given no URL finds its Redis as the CLI and the supervisor do:
``$REDFLOW_URL``, then ``$REDIS_URL``, else ``redis://localhost:6379/0``. It went
to localhost:6379 whatever the environment said, so a program configured by
``REDFLOW_URL`` (as its supervisor and ``redflow`` were) enqueued into another
Redis: the machine's own, where no worker of the app ever looked."""

from __future__ import annotations

import asyncio

import pytest

from redflow_mp import create_client
from redflow_mp.aio import create_async_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("variable", ["REDFLOW_URL", "REDIS_URL"])
def test_a_client_given_no_url_connects_where_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, prefix: str, variable: str
) -> None:
    monkeypatch.delenv("REDFLOW_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv(variable, redis_server.url)
    client = create_client(prefix=prefix, default=False)
    try:
        # before any write (a regression would write to the machine's own Redis)
        assert f":{redis_server.port}/" in repr(client), repr(client)
        run_id = client.run_by_name("nobody-runs-this", {"n": 1}).id
        key = client.keys.run
    finally:
        client.close()
    # the run is on the fixture's private server, under this prefix
    assert redis_server.client().exists(key(run_id)) == 1

    async def enqueue() -> str:
        aclient = create_async_client(prefix=prefix, default=False)
        try:
            assert f":{redis_server.port}/" in repr(aclient), repr(aclient)
            return (await aclient.run_by_name("nobody-runs-this", {"n": 2})).id
        finally:
            await aclient.aclose()

    other = asyncio.run(enqueue())
    assert redis_server.client().exists(key(other)) == 1


def test_redflow_url_comes_before_redis_url(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, prefix: str
) -> None:
    monkeypatch.setenv("REDFLOW_URL", redis_server.url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    client = create_client(prefix=prefix, default=False)
    try:
        assert f":{redis_server.port}/" in repr(client), repr(client)
        run_id = client.run_by_name("nobody-runs-this", None).id
        key = client.keys.run(run_id)
    finally:
        client.close()
    assert redis_server.client().exists(key) == 1
