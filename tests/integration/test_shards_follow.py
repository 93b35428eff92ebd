"""``shards`` follow-ups: the library's own listing reads every shard, ids of
shards >= the count resolve modulo it, clients check the recorded count, and
``redflow migrate --shards`` moves unfinished runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, create_client, define_workflow
from redflow_mp.aio import create_async_client
from redflow_mp.codec import text
from redflow_mp.errors import ShardsMismatchError
from redflow_mp.shardmeta import check_shards, recorded_shards
from tests.sharding import put, sharded_client, workflow_in

N = 3


@pytest.fixture()
def sharded(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    with sharded_client(redis_url, prefix, registry, N) as c:
        yield c


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
    # ZREVRANGE, one pipeline of the run's row and payload sizes (HMGET, HSTRLEN:
    # listing.run_states), an HGET of its input; then SMEMBERS + HGETALL: no other shard
    assert [c.upper() for c in count.commands] == ["ZREVRANGE", "HGET", "SMEMBERS", "HGETALL"]
    assert count.pipelines == 1


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
            with pytest.raises(ShardsMismatchError, match="--shards 2"):
                await ac.list_workflows()
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


# --------------------------------------------- 4. migrate moves unfinished runs


def _placed(base: str, k: int, n: int, m: int) -> str:
    """A workflow name in shard ``k`` of ``n`` whose shard under ``m`` is the one
    its runs' ids name there (``k % m``): its unfinished runs may move."""
    from redflow_mp.shards import shard_index_of_workflow as place

    return next(
        f"{base}{i}"
        for i in range(10_000)
        if place(f"{base}{i}", n) == k and place(f"{base}{i}", m) == (k % m if n > 1 else 0)
    )


class Family:
    """Workflows with runs in every unfinished status, in every shard of ``n``."""

    def __init__(self, registry: Registry, n: int, m: int) -> None:
        self.executions: dict[str, int] = {}
        self.lock = threading.Lock()
        ex, lock = self.executions, self.lock

        def count(run_id: str) -> None:
            with lock:
                ex[run_id] = ex.get(run_id, 0) + 1

        self.jobs = []
        for k in range(n):

            @define_workflow(_placed("job", k, n, m), queue="mq", registry=registry)
            def job(ctx: Context[Any]) -> Any:
                count(ctx.run.id)
                return ctx.input

            self.jobs.append(job)
        child_shard = 1 % n  # another shard than the parent's when n > 1

        @define_workflow(_placed("kid", child_shard, n, m), queue="pq", registry=registry)
        def kid(ctx: Context[Any]) -> Any:
            count(ctx.run.id)
            return ["kid", ctx.step.wait_for_event("w", "go")]

        @define_workflow(_placed("parent", 0, n, m), queue="pq", registry=registry)
        async def parent(ctx: Any) -> Any:
            count(ctx.run.id)
            return ["parent", await ctx.step.run_workflow("k", kid, None)]

        @define_workflow(_placed("hang", n - 1, n, m), queue="rq", registry=registry)
        def hang(ctx: Context[Any]) -> Any:
            count(ctx.run.id)
            return "reaped and run again"

        self.kid, self.parent, self.hang = kid, parent, hang


def _populate(old: Client, fam: Family, registry: Registry) -> dict[str, Any]:
    """Queued, scheduled, running (a lease nobody renews) and suspended runs
    (a parent on a child in another shard when there are several)."""
    import time

    from redflow_mp.ids import new_token
    from tests.helpers import WorkerPool, wait_until

    old.sync_registry(registry, app="t")
    expected: dict[str, Any] = {}
    for i, job in enumerate(fam.jobs):
        for j in range(3):
            expected[job.run(i * 10 + j, client=old).id] = i * 10 + j
        expected[job.run(-i, client=old, run_at=time.time() + 5).id] = -i
    pool = WorkerPool(old)
    pool.start(queues=["pq"])
    try:
        parent = fam.parent.run(client=old)
        wait_until(lambda: _status(old, parent.id) == "suspended", message="parent suspended")
        kids = _children(old, parent.id)
        assert len(kids) == 1
        wait_until(lambda: _status(old, kids[0]) == "suspended", message="child suspended")
    finally:
        pool.stop_all()
    hung = fam.hang.run(client=old)
    shard = old.shard_of_run(hung.id)
    _, claimed = shard.scripts.claim(("rq",), 1500, new_token())
    assert claimed is not None and claimed.id == hung.id  # running; its "process" is gone
    expected[hung.id] = "reaped and run again"
    expected[parent.id] = ["parent", ["kid", "go!"]]
    expected[kids[0]] = ["kid", "go!"]
    return expected


def _status(c: Client, run_id: str) -> str:
    state = c.get_run(run_id)
    return state.status.value if state is not None else ""


def _children(c: Client, parent_id: str) -> list[str]:
    shard = c.shard_of_run(parent_id)
    return sorted(text(x) for x in shard.redis.smembers(shard.keys.run_children(parent_id)))


def _drain(new: Client, fam: Family, expected: dict[str, Any]) -> None:
    from tests.helpers import WorkerPool, wait_until

    kid_id = next(i for i, v in expected.items() if v == ["kid", "go!"])
    pool = WorkerPool(new)
    pool.start(queues=["mq", "pq", "rq"])
    pool.start(queues=["mq", "pq", "rq"], home_shard=new.shard_count - 1)
    try:
        parent_id = next(i for i, v in expected.items() if isinstance(v, list) and v[0] == "parent")
        pshard = new.shard_of_run(parent_id)
        prun = pshard.keys.run(parent_id)

        def resuspended() -> bool:
            status, woken = pshard.redis.hmget(prun, ["status", "wokenAt"])
            return status == b"suspended" and woken is not None

        wait_until(resuspended, message="the parent woken by the migration suspends again")
        if pshard is new.shard_of_run(kid_id):  # its child is here now: an in-shard waiter
            assert pshard.redis.sismember(pshard.keys.run_waiters(kid_id), parent_id)
            assert pshard.redis.zscore(pshard.keys.timers, parent_id) is None  # no recheck
        assert new.send_event(kid_id, "go", "go!") is True
        got = {run_id: new.handle(run_id).result(timeout=30) for run_id in expected}
    finally:
        pool.stop_all()
    assert got == expected
    # every run executed once (the parent twice: before it suspended, and woken;
    # it may replay once more for the wake-up a migration gives it)
    ones = {r: n for r, n in fam.executions.items() if r in expected}
    parent_id = next(i for i, v in expected.items() if isinstance(v, list) and v[0] == "parent")
    kid_runs = {r: n for r, n in ones.items() if r not in (parent_id, kid_id)}
    assert all(n == 1 for n in kid_runs.values()), kid_runs
    assert set(kid_runs) == set(expected) - {parent_id, kid_id}
    states = new.list_runs(limit=1000)
    assert sorted(s.id for s in states) == sorted(expected)
    assert {s.status.value for s in states} == {"succeeded"}
    for view in new.shards:
        for status in ("queued", "scheduled", "running", "suspended"):
            assert view.redis.zcard(view.keys.runs_status(status)) == 0
        assert view.redis.zcard(view.keys.leases) == 0


def _where(c: Client, expected: dict[str, Any]) -> dict[str, str]:
    return {run_id: _status(c, run_id) for run_id in expected}


@pytest.mark.parametrize(("n", "m"), [(3, 1), (1, 3), (2, 3)])
def test_migrate_moves_unfinished_runs_and_a_supervisor_drains_them(
    make_client: Any, registry: Registry, n: int, m: int
) -> None:
    from redflow_mp.reshard import reshard

    old = make_client(shards=n)
    check_shards(old)  # as the supervisor that wrote the keyspace did
    fam = Family(registry, n, m)
    expected = _populate(old, fam, registry)
    before = _where(old, expected)
    assert set(before.values()) == {"queued", "scheduled", "running", "suspended"}
    new = make_client(shards=m, verify_shards=False)
    report = reshard(old, new)
    assert recorded_shards(new) == m
    if n == 3:
        assert report.unfinished_moved >= 6  # shards 1 and 2's runs went to {prefix}
        for view in old.shards[1:]:
            assert list(view.redis.scan_iter(match=view.keys.tag + ":*")) == []
    parent_id = next(i for i, v in expected.items() if isinstance(v, list) and v[0] == "parent")
    assert report.parents_rewoken == 1
    pkeys = new.shard_of_run(parent_id).keys
    score = new.shard_of_run(parent_id).redis.zscore(pkeys.timers, parent_id)
    assert score is not None and score <= new.server_time_ms() + 1000  # woken at once
    after = _where(new, expected)
    assert after == before  # every run found by its id, same status
    for run_id in expected:  # each lives in its workflow's shard under m
        state = new.get_run(run_id)
        assert state is not None and state.workflow is not None
        assert new.shard_of_run(run_id) is new.shard_of_workflow(state.workflow)
    _drain(new, fam, expected)


def test_migrate_killed_halfway_through_unfinished_runs_then_rerun(
    redis_url: str, make_client: Any, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redflow_mp.reshard as rs

    old = make_client(shards=3)
    check_shards(old)
    fam = Family(registry, 3, 1)
    expected = _populate(old, fam, registry)
    before = _where(old, expected)
    new = make_client(verify_shards=False)
    real = rs._move_run
    calls = {"n": 0}

    def dying(src: Any, dst: Any, run_id: str, status: str, score: float) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # keys copied and index entries added, source kept: killed
            original_delete = src.redis.delete

            def killed(*keys: Any) -> Any:
                raise KeyboardInterrupt

            monkeypatch.setattr(src.redis, "delete", killed)
            try:
                real(src, dst, run_id, status, score)
            finally:
                monkeypatch.setattr(src.redis, "delete", original_delete)
        real(src, dst, run_id, status, score)

    monkeypatch.setattr(rs, "_move_run", dying)
    with pytest.raises(KeyboardInterrupt):
        rs.reshard(old, new)
    with pytest.raises(ShardsMismatchError, match="interrupted"):
        create_client(redis_url, prefix=new.prefix, default=False)
    monkeypatch.setattr(rs, "_move_run", real)
    rs.reshard(old, new)
    assert _where(new, expected) == before
    for status in ("queued", "scheduled", "running", "suspended", "succeeded"):
        ids = [x.decode() for x in new.redis.zrange(new.keys.runs_status(status), 0, -1)]
        assert len(ids) == len(set(ids))
        assert sorted(ids) == sorted(r for r, s in before.items() if s == status)
    ready = new.redis.zcard(new.keys.q_ready("mq"))
    assert ready == sum(1 for r, s in before.items() if s == "queued")
    assert new.redis.zcard(new.keys.q_scheduled("mq")) == len(fam.jobs)
    _drain(new, fam, expected)


def test_migrate_refuses_an_unfinished_run_its_id_would_take_from_its_workflow(
    make_client: Any,
) -> None:
    from redflow_mp.errors import RedflowError
    from redflow_mp.reshard import reshard
    from redflow_mp.shards import shard_index_of_workflow as place

    old = make_client(shards=3)
    check_shards(old)
    # ~2 names shard 0 under 2 shards, the workflow goes to shard 1
    name = next(f"w{i}" for i in range(10_000) if place(f"w{i}", 3) == 2 and place(f"w{i}", 2) == 1)
    run_id = put(old.shards[2], name)
    new = make_client(shards=2, verify_shards=False)
    with pytest.raises(RedflowError, match=r"1 unfinished run.*k % 2.*Nothing was changed"):
        reshard(old, new)
    assert old.redis.hget(old.keys.meta, "reshardTo") is None and recorded_shards(old) == 3
    assert _status(old, run_id) == "queued"
    # once it finished (here: canceled) the same migration goes through
    assert old.cancel_run(run_id) is True
    assert reshard(old, new).runs_moved == 1
    assert _status(new, run_id) == "canceled"
    assert new.shard_of_run(run_id) is new.shards[0]
