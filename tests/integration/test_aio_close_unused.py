"""An :class:`AsyncClient` closed before it made any call (an application that
creates its client at start-up and closes it at shutdown without having used
it, ``async with create_async_client(...)`` around code that returned early, a
first call refused for a bad argument before any I/O).

Such a client has no event loop yet; ``aclose()`` began its closing task on the
running loop, then took "no loop" for "another loop" and raised ``RedflowError:
this async client ... is closed`` from ``aclose()`` itself."""

from __future__ import annotations

import asyncio

import pytest
import redis

from redflow_mp import Registry
from redflow_mp.aio import create_async_client, get_default_async_client
from redflow_mp.errors import RedflowError

pytestmark = pytest.mark.timeout(60)


def test_an_async_client_closed_before_any_call_closes_cleanly(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    before = int(raw.info("clients")["connected_clients"])

    async def main() -> None:
        unused = create_async_client(redis_url, prefix=prefix, registry=registry)
        await unused.aclose()
        await unused.aclose()  # twice is fine
        assert get_default_async_client() is None
        with pytest.raises(RedflowError, match="is closed"):
            await unused.list_runs()

        async with create_async_client(redis_url, prefix=prefix, registry=registry) as ac:
            assert ac is get_default_async_client()

        refused = create_async_client(redis_url, prefix=prefix, registry=registry)
        with pytest.raises(ValueError, match="run_at"):
            await refused.run_by_name("any", None, run_at=-1)
        await refused.aclose()

    asyncio.run(main())
    assert int(raw.info("clients")["connected_clients"]) <= before
