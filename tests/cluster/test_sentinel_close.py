"""Closing a client that reaches its master through Sentinel closes the
connections it opened to the sentinels too (not only those to the master)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from redflow_mp import Context, Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import RedflowError
from tests.helpers import wait_until
from tests.servers import SentinelSet

pytestmark = pytest.mark.timeout(120)


def _asked(sentinels: list[redis.Redis]) -> list[int]:
    """Per sentinel, its clients whose last command asked it where the master is
    (``SENTINEL MASTERS`` or ``GET-MASTER-ADDR-BY-NAME``), the sentinels' own links
    to each other (named ``sentinel-<id>-cmd``) left out."""
    return [
        sum(
            str(c.get("cmd", "")).startswith("sentinel")
            and not str(c.get("name", "")).startswith("sentinel-")
            for c in s.client_list()
        )
        for s in sentinels
    ]


def _sentinels(sentinel_set: SentinelSet) -> list[redis.Redis]:
    return [redis.Redis(host=h, port=p) for h, p in sentinel_set.sentinel_addresses]


def test_close_leaves_no_sentinel_connection_open(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    """Before, the sentinel connection that found the master stayed open for as long
    as the closed client object lived, and a call after close() opened it again."""

    @define_workflow("sentinel-close", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)
    c = create_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
    handle = parked.run(None, client=c)
    assert c.get_run(handle.id) is not None
    assert sum(_asked(sentinels)) > sum(before)  # the client asked a sentinel
    c.close()
    wait_until(lambda: _asked(sentinels) == before, timeout=10)
    with pytest.raises(RedflowError, match="is closed"):
        c.get_run(handle.id)
    assert _asked(sentinels) == before  # the call after close asked no sentinel


def test_aclose_leaves_no_sentinel_connection_open(
    sentinel_set: SentinelSet, registry: Registry, prefix: str
) -> None:
    @define_workflow("sentinel-aclose", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    sentinels = _sentinels(sentinel_set)
    before = _asked(sentinels)

    async def main() -> None:
        ac = create_async_client(sentinel_set.url, prefix=prefix, registry=registry, default=False)
        handle = await parked.arun(None, client=ac)
        assert await ac.get_run(handle.id) is not None
        assert sum(_asked(sentinels)) > sum(before)
        await ac.aclose()

    asyncio.run(main())
    wait_until(lambda: _asked(sentinels) == before, timeout=10)
