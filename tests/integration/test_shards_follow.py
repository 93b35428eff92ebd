"""``shards`` follow-ups: the library's own listing reads every shard, ids of
shards >= the count resolve modulo it, clients check the recorded count, and
``redflow migrate --shards`` moves unfinished runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.errors import ShardsMismatchError
from redflow_mp.ids import new_run_id
from redflow_mp.shardmeta import check_shards, recorded_shards
from redflow_mp.shardset import Shard

N = 3


@pytest.fixture()
def sharded(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=N)
    try:
        yield c
    finally:
        c.close()


def workflow_in(client: Client, index: int, base: str = "wf") -> str:
    return next(
        f"{base}{i}" for i in range(1000) if client.shard_of_workflow(f"{base}{i}").index == index
    )


def put(shard: Shard, workflow: str, queue: str = "q", run_at_ms: int = 0) -> str:
    """Enqueue one run in ``shard`` with its own scripts; its id names the shard."""
    run_id, created = shard.scripts.enqueue(
        shard.run_id(new_run_id()), workflow, queue, b"1", 1, run_at_ms, "", 0, "", "", None, None
    )
    assert created
    return run_id


class Counter:
    """Counts the commands and pipelines a redis-py client sends (no MONITOR)."""

    def __init__(self, r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[str] = []
        self.pipelines = 0
        real_exec, real_pipe = r.execute_command, r.pipeline

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(str(args[0]))
            return real_exec(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return real_pipe(*args, **kwargs)

        monkeypatch.setattr(r, "execute_command", execute_command)
        monkeypatch.setattr(r, "pipeline", pipeline)


# ----------------------------------------------------------------- 1. listing


def _define(registry: Registry, names: list[str]) -> None:
    for name in names:

        @define_workflow(name, queue="q", registry=registry)
        def flow(ctx: Context[Any]) -> None:
            return None


def test_client_list_runs_and_workflows_read_every_shard(
    redis_url: str, prefix: str, sharded: Client, registry: Registry
) -> None:
    names = [workflow_in(sharded, k) for k in range(N)]
    ids = [put(s, names[s.index]) for s in sharded.shards for _ in range(2)]
    listed = [r.id for r in sharded.list_runs(limit=4)] + [
        r.id for r in sharded.list_runs(limit=4, offset=4)
    ]
    assert sorted(listed) == sorted(ids) and len(listed) == len(ids)
    assert {r.id for r in sharded.list_runs(workflow=names[2])} == set(ids[4:])
    assert len(sharded.list_runs(status="queued", limit=100)) == 6
    _define(registry, names)
    sharded.sync_registry(registry, app="a")
    assert sharded.shards[2].redis.exists(sharded.shards[2].keys.workflow(names[2]))
    assert [w.name for w in sharded.list_workflows()] == sorted(names)

    async def main() -> tuple[list[str], list[str], list[str]]:
        ac = create_async_client(redis_url, prefix=prefix, default=False, shards=N)
        try:
            first = [r.id for r in await ac.list_runs(limit=4)]
            second = [r.id for r in await ac.list_runs(limit=4, offset=4)]
            wfs = [w.name for w in await ac.list_workflows()]
            return first, second, wfs
        finally:
            await ac.aclose()

    first, second, wfs = asyncio.run(main())
    assert first + second == listed
    assert wfs == sorted(names)


def test_one_shard_listing_sends_what_it_sent_before(
    client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = put(client.shards[0], "w1")
    _define(registry, ["w1"])
    client.sync_registry(registry, app="a")
    count = Counter(client.redis, monkeypatch)
    assert [r.id for r in client.list_runs()] == [run_id]
    assert [w.name for w in client.list_workflows()] == ["w1"]
    # ZREVRANGE + HGETALL, then SMEMBERS + HGETALL: no pipeline, no other shard
    assert [c.upper() for c in count.commands] == ["ZREVRANGE", "HGETALL", "SMEMBERS", "HGETALL"]
    assert count.pipelines == 0


# ----------------------------------------------------- 2. ids of bigger counts


def test_ids_of_shards_beyond_the_count_resolve_modulo(sharded: Client) -> None:
    name = workflow_in(sharded, 1)
    run_id = put(sharded.shards[1], name)  # <ulid>~1
    ulid = run_id.rsplit("~", 1)[0]
    # the same run seen by a 3-shard client with the id it had under 5 shards (~4)
    # or 4 shards (~1 +3 = ~4): shard 4 mod 3 = 1
    assert sharded.shard_of_run(ulid + "~4") is sharded.shards[1]
    assert sharded.shard_of_run(ulid + "~7") is sharded.shards[1]
    assert sharded.shard_of_run(ulid + "~5") is sharded.shards[2]
    assert sharded.get_run(ulid + "~4") is None  # the id differs: no such run there
    assert sharded.get_run(run_id) is not None
    for bad in (ulid + "~x", ulid + "~01", ulid + "~1024", ulid + "~-1"):
        with pytest.raises(ValueError, match="run id"):
            sharded.get_run(bad)


# ------------------------------------------------------ 3. the recorded count


def test_create_client_refuses_a_count_other_than_the_recorded_one(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    fresh = create_client(redis_url, prefix=prefix, default=False, shards=2)
    assert recorded_shards(fresh) is None  # the client's check wrote nothing
    assert fresh.redis.exists(fresh.keys.meta) == 0
    fresh.close()
    three = create_client(redis_url, prefix=prefix, default=False, shards=3)
    check_shards(three)  # what a supervisor does at start: records 3
    three.close()
    with pytest.raises(ShardsMismatchError, match=r"redflow migrate --prefix .* --shards 1"):
        create_client(redis_url, prefix=prefix, default=False)
    with pytest.raises(ShardsMismatchError, match="has 3 shard"):
        create_client(redis_url, prefix=prefix, default=False, shards=2)
    ok = create_client(redis_url, prefix=prefix, default=False, shards=3)
    ok.close()
    unchecked = create_client(redis_url, prefix=prefix, default=False, verify_shards=False)
    unchecked.close()
    with pytest.raises(TypeError, match="verify_shards"):
        create_client(redis_url, prefix=prefix, default=False, verify_shards=1)  # type: ignore[arg-type]
    admin = create_client(redis_url, prefix=prefix, default=False, shards=3)
    admin.redis.hset(admin.keys.meta, "reshardTo", 1)
    with pytest.raises(ShardsMismatchError, match=r"migration .* interrupted"):
        create_client(redis_url, prefix=prefix, default=False, shards=3)
    admin.redis.hdel(admin.keys.meta, "reshardTo")
    admin.close()

    async def main() -> str:
        ac = create_async_client(redis_url, prefix=prefix, default=False, shards=2)
        try:
            with pytest.raises(ShardsMismatchError, match="--shards 2"):
                await ac.run_by_name("w", None)
            with pytest.raises(ShardsMismatchError, match="--shards 2"):
                await ac.list_runs()
        finally:
            await ac.aclose()
        good = create_async_client(redis_url, prefix=prefix, default=False, shards=3)
        try:
            return str(await good.list_runs())
        finally:
            await good.aclose()

    assert asyncio.run(main()) == "[]"


def test_create_client_checks_with_one_round_trip(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redflow_mp import shardmeta

    seen: list[Any] = []
    real = shardmeta.check_recorded

    def spy(c: Client) -> None:
        count = Counter(c.redis, monkeypatch)
        real(c)
        seen.append((list(count.commands), count.pipelines))

    monkeypatch.setattr(shardmeta, "check_recorded", spy)  # client.py calls it by module
    create_client(redis_url, prefix=prefix, default=False, shards=3).close()
    assert [(cmds[-1:], p) for cmds, p in seen] == [(["HMGET"], 0)]
    assert [c for c in seen[0][0] if c.upper() != "PING"] == ["HMGET"]
    create_client(redis_url, prefix=prefix, default=False, verify_shards=False).close()
    assert len(seen) == 1


def test_create_client_with_redis_down_is_unchecked_and_lazy(prefix: str) -> None:
    c = create_client("redis://127.0.0.1:1/0", prefix=prefix, default=False, shards=3)
    assert c.shard_count == 3
    c.close()
