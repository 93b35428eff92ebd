"""``shards > 1`` on one redis-server: the shard API, placement and routing of the
data plane (enqueue, claim, steps, finish, waits, cancel, events, children)."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import Client, Registry, create_client
from redflow_mp.keys import Keys
from redflow_mp.shards import shard_tags


def test_shard_api_on_one_server(redis_url: str, prefix: str, registry: Registry) -> None:
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=3)
    try:
        assert c.shard_count == 3
        assert [s.index for s in c.shards] == [0, 1, 2]
        assert [s.keys.tag for s in c.shards] == list(shard_tags(prefix, 3))
        assert c.shards[0].keys.tag == c.keys.tag == Keys(prefix).tag
        # one server: every shard shares shard 0's connections
        assert all(s.redis is c.redis for s in c.shards)
        assert all(s.transport is c.transport for s in c.shards)
        assert c.shards[0].scripts is c.scripts
        name = next(f"wf{i}" for i in range(100) if c.shard_of_workflow(f"wf{i}").index == 2)
        assert c.shard_of_workflow(name) is c.shards[2]
        assert c.shard_of_run("01J0000000000000000000000A~1") is c.shards[1]
        assert c.shard_of_run("01J0000000000000000000000A") is c.shards[0]
        with pytest.raises(ValueError, match="names shard 7"):
            c.shard_of_run("01J0000000000000000000000A~7")
        with pytest.raises(ValueError, match="malformed run id"):
            c.shard_of_run("01J0000000000000000000000A~x")
    finally:
        c.close()


def test_one_shard_is_the_plain_client(client: Client) -> None:
    assert client.shard_count == 1
    (only,) = client.shards
    assert only.keys.tag == client.keys.tag and only.redis is client.redis
    assert client.shard_of_workflow("anything") is only


def test_shards_setting_is_checked(redis_url: str, prefix: str) -> None:
    for bad in (0, 1025):
        with pytest.raises(ValueError, match="shards must be from 1 to 1024"):
            create_client(redis_url, prefix=prefix, default=False, shards=bad)
    with pytest.raises(TypeError, match="shards must be an int"):
        create_client(redis_url, prefix=prefix, default=False, shards="3")  # type: ignore[arg-type]


async def _async_api(url: str, prefix: str) -> list[Any]:
    from redflow_mp.aio import create_async_client

    c = create_async_client(url, prefix=prefix, default=False, shards=3)
    try:
        assert c.shard_count == 3
        assert c.shards[0].scripts is c.scripts
        assert c.shard_of_run("01J0000000000000000000000A~2") is c.shards[2]
        pings = [await s.redis.ping() for s in c.shards]
        return [s.keys.tag for s in c.shards] + pings
    finally:
        await c.aclose()


def test_async_shard_api(redis_url: str, prefix: str) -> None:
    import asyncio

    out = asyncio.run(_async_api(redis_url, prefix))
    assert out == [*shard_tags(prefix, 3), True, True, True]
