"""``shards > 1`` on one redis-server: the shard API, placement and routing of the
data plane (enqueue, claim, steps, finish, waits, cancel, events, children)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    Registry,
    RunCanceledError,
    RunFailedError,
    Worker,
    create_client,
    define_workflow,
    xshard,
)
from redflow_mp.client import set_default_client
from redflow_mp.codec import RunWait
from redflow_mp.keys import Keys
from redflow_mp.shards import shard_tags
from redflow_mp.worker import UNWATCHED_BLOCK_TIMEOUT
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(90)


def test_shard_api_on_one_server(redis_url: str, prefix: str, registry: Registry) -> None:
    c = create_client(redis_url, prefix=prefix, registry=registry, default=False, shards=3)
    try:
        assert c.shard_count == 3
        assert [s.index for s in c.shards] == [0, 1, 2]
        assert [s.keys.tag for s in c.shards] == list(shard_tags(prefix, 3))
        assert c.shards[0].keys.tag == c.keys.tag == Keys(prefix).tag
        redises = [s.redis for s in c.shards]  # resolved: the server was asked
        router = c.transport.router
        if router is not None and router.cluster:  # --redis-topology=cluster
            assert len({id(r) for r in redises}) == 3
        else:  # one server: every shard shares shard 0's connections
            assert all(r is c.redis for r in redises)
            assert all(s.transport is c.transport for s in c.shards)
        assert c.shards[0].scripts is c.scripts
        name = next(f"wf{i}" for i in range(100) if c.shard_of_workflow(f"wf{i}").index == 2)
        assert c.shard_of_workflow(name) is c.shards[2]
        assert c.shard_of_run("01J0000000000000000000000A~1") is c.shards[1]
        assert c.shard_of_run("01J0000000000000000000000A") is c.shards[0]
        # an id naming shard k >= 3 (a run kept its id through a migration to fewer
        # shards) lives in shard k mod 3
        assert c.shard_of_run("01J0000000000000000000000A~7") is c.shards[1]
        with pytest.raises(ValueError, match="names shard 1024"):
            c.shard_of_run("01J0000000000000000000000A~1024")
        with pytest.raises(ValueError, match="malformed run id"):
            c.shard_of_run("01J0000000000000000000000A~x")
    finally:
        c.close()


def test_one_shard_is_the_plain_client(client: Client) -> None:
    assert client.shard_count == 1
    (only,) = client.shards
    assert only.keys.tag == client.keys.tag and only.redis is client.redis
    assert client.shard_of_workflow("anything") is only
    # one shard: every well-formed id is shard 0's (a suffix naming another shard:
    # a run migrated from more shards); a malformed suffix is refused as with
    # several (test_malformed_run_ids.py), no longer read as an unknown run
    assert client.shard_of_run("01J0000000000000000000000A~7") is only
    with pytest.raises(ValueError, match="malformed run id 'no~such'"):
        client.get_run("no~such")


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


# ---------------------------------------------------------------------------
# the data plane with shards = 3 on one server (the cluster module reuses these)


def name_on(c: Client, base: str, index: int) -> str:
    """A workflow name starting with ``base`` placed on shard ``index``."""
    return next(
        f"{base}-{i}" for i in range(1000) if c.shard_of_workflow(f"{base}-{i}").index == index
    )


@pytest.fixture()
def sc(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    c = create_client(redis_url, prefix=prefix, registry=registry, shards=3)
    try:
        yield c
    finally:
        c.close()
        set_default_client(None)


@pytest.fixture()
def sworkers(sc: Client) -> Iterator[WorkerPool]:
    pool = WorkerPool(sc)
    try:
        yield pool
    finally:
        pool.stop_all()


def _exists(raw: Any, key: str) -> bool:
    return bool(raw.exists(key))


def test_runs_of_workflows_on_every_shard_run_to_success(
    sc: Client, registry: Registry, sworkers: WorkerPool, raw: Any
) -> None:
    flows = []
    for k in range(3):

        @define_workflow(name_on(sc, "spread", k), queue="sq", registry=registry)
        def flow(ctx: Context[Any]) -> Any:
            a = ctx.step.run("a", lambda: int(ctx.input) + 1)
            return {"out": a, "run": ctx.run.id}

        flows.append(flow)
    sc.sync_registry(registry, app="t")
    handles = [(k, f.run(i)) for k, f in enumerate(flows) for i in range(5)]
    for k, h in handles:
        assert h.id.endswith(f"~{k}") and len(h.id) == 28
    sworkers.start(queues=["sq"])  # home shard 0: claims shards 1 and 2 too
    for k, h in handles:
        out = h.result(timeout=20)
        assert out["run"] == h.id
        shard = sc.shards[k]
        assert _exists(raw, shard.keys.run(h.id)) and _exists(raw, shard.keys.run_steps(h.id))
        for other in sc.shards:
            if other is not shard:
                assert not _exists(raw, other.keys.run(h.id))
        state = sc.get_run(h.id)
        assert state is not None and state.status.value == "succeeded"
        assert raw.zscore(shard.keys.runs_status("succeeded"), h.id) is not None
        assert raw.zscore(shard.keys.workflow_runs(flows[k].name), h.id) is not None
    # metadata of each workflow in its shard; the workflows set in shard 0
    for k, f in enumerate(flows):
        assert _exists(raw, sc.shards[k].keys.workflow(f.name))
        assert raw.sismember(sc.keys.workflows, f.name)
        assert raw.sismember(sc.shards[k].keys.queues, "sq")
        meta = sc.get_workflow_meta(f.name)
        assert meta is not None and meta.queue == "sq"


def test_max_concurrency_of_a_workflow_in_another_shard_holds(
    sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    lock = threading.Lock()
    now = [0]
    peak = [0]

    @define_workflow(name_on(sc, "gate", 2), queue="gq", max_concurrency=2, registry=registry)
    def gated(ctx: Context[Any]) -> int:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.03)
        with lock:
            now[0] -= 1
        return int(ctx.input)

    for home in range(4):
        sworkers.start(queues=["gq"], home_shard=home)
    handles = [gated.run(i) for i in range(24)]
    assert [h.result(timeout=30) for h in handles] == list(range(24))
    assert peak[0] == 2


def test_idempotency_keys_are_exact_in_the_workflow_shard(
    sc: Client, registry: Registry, raw: Any
) -> None:
    @define_workflow(name_on(sc, "idem", 1), registry=registry)
    def flow(ctx: Context[Any]) -> None:
        return None

    a = flow.run(1, idempotency_key="k1")
    b = flow.run(2, idempotency_key="k1")
    c = flow.run(3, idempotency_key="k2")
    assert a.id == b.id != c.id
    keys = sc.shards[1].keys
    assert raw.get(keys.idempotency(flow.name, "k1")) == a.id.encode()
    assert not _exists(raw, sc.keys.idempotency(flow.name, "k1"))
    many = sc.run_many_by_name(flow.name, [4, 5, 6], idempotency_keys=["k1", None, "k3"])
    assert many[0].id == a.id and all(h.id.endswith("~1") for h in many)


def test_get_cancel_send_event_resume_route_by_run_id(
    sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "ev", 2), queue="eq", registry=registry)
    def waiter(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    sworkers.start(queues=["eq"])
    h = waiter.run()
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="suspended")
    assert sc.send_event(h.id, "go", {"x": 1}) is True
    assert h.result(timeout=20) == {"x": 1}
    h2 = waiter.run(run_at=time.time() + 3600)
    assert sc.cancel_run(h2.id, "no") is True
    assert status_of(sc, h2.id) == "canceled"
    assert sc.resume_run(h2.id).id == h2.id
    wait_until(lambda: status_of(sc, h2.id) == "suspended", message="resumed run suspends")
    assert sc.send_event(h2.id, "go", 7) is True
    assert sc.handle(h2.id).result(timeout=20) == 7
    with pytest.raises(ValueError, match="malformed run id"):
        sc.send_event(h2.id + "x", "go")
    with pytest.raises(ValueError, match="names shard 5000"):
        sc.get_run(h.id[:-1] + "5000")
    assert sc.get_run(h.id.rsplit("~", 1)[0] + "~7") is None  # shard 1, no such run


def status_of(c: Client, run_id: str) -> str:
    state = c.get_run(run_id)
    return state.status.value if state is not None else ""


def _family(sc: Client, registry: Registry, a: int, b: int, c: int) -> tuple[Any, Any, Any]:
    @define_workflow(name_on(sc, "kid-b", b), queue="fq", registry=registry)
    def kid_b(ctx: Context[Any]) -> Any:
        return ["b", ctx.step.wait_for_event("w", "go")]

    @define_workflow(name_on(sc, "kid-c", c), queue="fq", registry=registry)
    def kid_c(ctx: Context[Any]) -> Any:
        return ["c", ctx.step.wait_for_event("w", "go")]

    @define_workflow(name_on(sc, "parent", a), queue="fq", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> Any:
        return list(
            await asyncio.gather(
                ctx.step.run_workflow("b", kid_b, None), ctx.step.run_workflow("c", kid_c, None)
            )
        )

    return parent, kid_b, kid_c


def _suspended(sc: Client, run_id: str) -> None:
    wait_until(lambda: status_of(sc, run_id) == "suspended", message=f"{run_id} suspended")


def _two_children(sc: Client, raw: Any, parent_id: str) -> list[str]:
    wait_until(lambda: len(_children(sc, raw, parent_id)) == 2, message="two children")
    return _children(sc, raw, parent_id)


def _children(sc: Client, raw: Any, parent_id: str) -> list[str]:
    shard = sc.shard_of_run(parent_id)
    return sorted(x.decode() for x in raw.smembers(shard.keys.run_children(parent_id)))


@pytest.mark.parametrize("order", ["bc", "cb"])
def test_parent_awaits_children_in_two_other_shards(
    sc: Client, registry: Registry, sworkers: WorkerPool, raw: Any, order: str
) -> None:
    parent, _kid_b, _kid_c = _family(sc, registry, 0, 1, 2)
    sworkers.start(queues=["fq"])
    sworkers.start(queues=["fq"], home_shard=1)
    h = parent.run()
    kids = _two_children(sc, raw, h.id)
    by_shard = {sc.shard_of_run(k).index: k for k in kids}
    assert sorted(by_shard) == [1, 2]
    for k in kids:
        _suspended(sc, k)
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")
    pkeys = sc.shard_of_run(h.id).keys
    assert sorted(x.decode() for x in raw.smembers(pkeys.run_awaits(h.id))) == kids
    # a recheck timer about 30 s ahead (children in other shards)
    score = raw.zscore(pkeys.timers, h.id)
    assert score is not None and score - sc.server_time_ms() > 20_000
    first, second = (by_shard[1], by_shard[2]) if order == "bc" else (by_shard[2], by_shard[1])
    sc.send_event(first, "go", 1)
    sc.handle(first).result(timeout=20)
    wait_until(lambda: raw.hexists(pkeys.run_kicked(h.id), first), message="first kick")
    assert status_of(sc, h.id) == "suspended"  # still waits for the other one
    sc.send_event(second, "go", 2)
    out = h.result(timeout=20)
    v = {by_shard[1]: 1 if order == "bc" else 2, by_shard[2]: 2 if order == "bc" else 1}
    assert out == [["b", v[by_shard[1]]], ["c", v[by_shard[2]]]]
    assert raw.zscore(pkeys.timers, h.id) is None
    # the in-shard waiter sets are not used across shards
    for k in kids:
        assert not _exists(raw, sc.shard_of_run(k).keys.run_waiters(k))


def test_failed_child_in_another_shard_wakes_the_parent_at_once(
    sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "bad-kid", 2), queue="xq", registry=registry)
    def bad(ctx: Context[Any]) -> Any:
        ctx.step.wait_for_event("w", "go")
        raise ValueError("boom")

    @define_workflow(name_on(sc, "watcher", 0), queue="xq", registry=registry)
    def watcher(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.run_workflow("k", bad, None)
        except RunFailedError as exc:
            return "failed: " + str(exc)

    sworkers.start(queues=["xq"])
    h = watcher.run()
    kid = wait_until(lambda: _children(sc, sc.redis, h.id))[0]
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")
    sc.send_event(kid, "go")
    out = h.result(timeout=20)
    assert out.startswith("failed: ") and "boom" in out


def test_kick_before_suspend_is_not_missed(sc: Client, registry: Registry, raw: Any) -> None:
    @define_workflow(name_on(sc, "kb-kid", 1), queue="kq", registry=registry)
    def kid(ctx: Context[Any]) -> int:
        return 5

    @define_workflow(name_on(sc, "kb-parent", 2), queue="pq", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("k", kid, None)

    p = parent.run()
    c = kid.run()
    pshard = sc.shard_of_run(p.id)
    _r, claimed = pshard.scripts.claim(("pq",), 5000, "tok-p")
    assert claimed is not None and claimed.id == p.id
    wait = RunWait(children=[c.id])
    # not kicked: suspends, with the child awaited and a recheck timer
    assert pshard.scripts.suspend(p.id, "tok-p", wait) == "suspended"
    assert raw.smembers(pshard.keys.run_awaits(p.id)) == {c.id.encode()}
    # the kick of a finished child wakes it
    assert xshard.kick(sc, p.id, c.id, "succeeded") is True
    assert status_of(sc, p.id) == "queued"
    _r, again = pshard.scripts.claim(("pq",), 5000, "tok-p2")
    assert again is not None and again.id == p.id
    # kicked before the suspend: the suspend answers resume
    assert pshard.scripts.suspend(p.id, "tok-p2", wait) == "resume"
    assert status_of(sc, p.id) == "running"
    # a failed child recorded by a kick also resumes at once
    c2 = kid.run()
    assert xshard.kick(sc, p.id, c2.id, "failed") is False  # running: recorded only
    assert pshard.scripts.suspend(p.id, "tok-p2", RunWait(children=[c2.id])) == "resume"
    # a kick for an unknown parent records nothing
    ghost = pshard.run_id("01J0000000000000000000000Z")
    assert xshard.kick(sc, ghost, c.id, "succeeded") is False
    assert not _exists(raw, pshard.keys.run_kicked(ghost))


def test_lost_kick_is_caught_by_the_recheck_timer(
    sc: Client, registry: Registry, sworkers: WorkerPool, raw: Any, monkeypatch: Any
) -> None:
    @define_workflow(name_on(sc, "lk-kid", 0), queue="lq", registry=registry)
    def kid(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    @define_workflow(name_on(sc, "lk-parent", 1), queue="lq", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        return ctx.step.run_workflow("k", kid, None)

    sworkers.start(queues=["lq"])
    h = parent.run()
    k = wait_until(lambda: _children(sc, raw, h.id))[0]
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")
    kicks: list[str] = []

    def lost(*a: Any) -> bool:
        kicks.append(a[2])
        return False

    monkeypatch.setattr(xshard, "kick", lost)
    sc.send_event(k, "go", "done")
    assert sc.handle(k).result(timeout=20) == "done"
    wait_until(lambda: kicks, message="the finisher's (lost) kick")
    assert kicks == [k]
    pshard = sc.shard_of_run(h.id)
    assert status_of(sc, h.id) == "suspended"
    # its recheck timer is set, RECHECK_MS ahead: the only way left to wake it
    due = raw.zscore(pshard.keys.timers, h.id)
    assert due is not None and due > sc.server_time_ms() + xshard.RECHECK_MS / 2
    # the recheck timer comes (moved to now instead of waiting 30 s), and the
    # workers' own timer pass (wake_due, every 0.2 s) wakes the parent. The test
    # used to call wake_timers itself and assert it woke the parent: on a loaded
    # machine a worker's pass got there between the move and that call (read 0).
    assert raw.zadd(pshard.keys.timers, {h.id: 0}, xx=True, ch=True) == 1
    assert h.result(timeout=20) == "done"  # well before the timer's own 30 s


def test_cancel_cascades_to_children_in_other_shards(
    sc: Client, registry: Registry, sworkers: WorkerPool, raw: Any
) -> None:
    parent, _b, _c = _family(sc, registry, 2, 0, 1)
    sworkers.start(queues=["fq"])
    h = parent.run()
    kids = _two_children(sc, raw, h.id)
    for k in kids:
        _suspended(sc, k)
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")
    assert sc.cancel_run(h.id, "stop") is True
    assert status_of(sc, h.id) == "canceled"
    assert [status_of(sc, k) for k in kids] == ["canceled", "canceled"]


def test_async_cancel_cascades_to_children_in_shards_it_never_used(
    redis_url: str, prefix: str, sc: Client, registry: Registry, sworkers: WorkerPool, raw: Any
) -> None:
    """A fresh async client cancels a parent: its first calls on the children's
    shards are the cascade's (it used to fail there with an AssertionError, the
    parent canceled and its children left running)."""
    parent, _b, _c = _family(sc, registry, 2, 0, 1)
    sworkers.start(queues=["fq"])
    h = parent.run()
    kids = _two_children(sc, raw, h.id)
    for k in kids:
        _suspended(sc, k)
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")

    async def main() -> bool:
        from redflow_mp.aio import create_async_client

        ac = create_async_client(redis_url, prefix=prefix, default=False, shards=3)
        try:
            return await ac.cancel_run(h.id, "stop")
        finally:
            await ac.aclose()

    assert asyncio.run(main()) is True
    assert status_of(sc, h.id) == "canceled"
    assert [status_of(sc, k) for k in kids] == ["canceled", "canceled"]


def test_cancel_of_a_child_wakes_its_parent_in_another_shard(
    sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "ck-kid", 1), queue="cq", registry=registry)
    def kid(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    @define_workflow(name_on(sc, "ck-parent", 0), queue="cq", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.run_workflow("k", kid, None)
        except RunCanceledError:
            return "child canceled"

    sworkers.start(queues=["cq"])
    h = parent.run()
    k = wait_until(lambda: _children(sc, sc.redis, h.id))[0]
    wait_until(lambda: status_of(sc, h.id) == "suspended", message="parent suspended")
    assert sc.cancel_run(k) is True
    assert h.result(timeout=20) == "child canceled"


def test_shards_run_with_a_run_many_batch_and_async_client(
    redis_url: str, prefix: str, sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "many", 2), queue="mq", registry=registry)
    def flow(ctx: Context[Any]) -> int:
        return int(ctx.input) * 3

    hs = flow.run_many(list(range(20)))
    assert all(h.id.endswith("~2") for h in hs)
    sworkers.start(queues=["mq"])
    assert [h.result(timeout=20) for h in hs] == [i * 3 for i in range(20)]

    async def main() -> list[Any]:
        from redflow_mp.aio import create_async_client

        ac = create_async_client(redis_url, prefix=prefix, registry=registry, shards=3)
        try:
            ah = await ac.run_by_name(flow.name, 5)
            assert ah.id.endswith("~2")
            got = [await ah.result(timeout=20)]
            state = await ac.get_run(ah.id)
            got.append(state.status.value if state else None)
            many = await ac.run_many_by_name(flow.name, [1, 2])
            got += [await m.result(timeout=20) for m in many]
            return got
        finally:
            await ac.aclose()

    assert asyncio.run(main()) == [15, "succeeded", 3, 6]


def test_a_worker_waits_on_the_bells_it_can(sc: Client, registry: Registry) -> None:
    w = Worker(sc, queues=["q1"], home_shard=4)
    try:
        assert w.home is sc.shards[1]  # 4 mod 3
        router = sc.transport.router
        if router is not None and router.cluster:
            # a cluster: one BLPOP is one slot, so only the home shard's bells; the
            # other shards are looked at every UNWATCHED_BLOCK_TIMEOUT
            assert w._bells[:-1] == [sc.shards[1].keys.q_bell("q1")]
            assert w.block_timeout == UNWATCHED_BLOCK_TIMEOUT
            watched = Worker(sc, queues=["q1"], shards_watched=True)
            assert watched.block_timeout == 1.0
            watched.close()
        else:  # one server: the bells of every shard, home first, and no polling
            assert w._bells[:-1] == [sc.shards[k].keys.q_bell("q1") for k in (1, 2, 0)]
            assert w.block_timeout == 1.0
        assert w._bells[-1].startswith(sc.shards[1].keys.tag + ":worker-wake:")
    finally:
        w.close()


def test_async_cancel_of_a_child_wakes_its_parent_in_another_shard(
    redis_url: str, prefix: str, sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "ack-kid", 2), queue="aq", registry=registry)
    def kid(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    @define_workflow(name_on(sc, "ack-parent", 1), queue="aq", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.run_workflow("k", kid, None)
        except RunCanceledError:
            return "child canceled"

    sworkers.start(queues=["aq"])
    h = parent.run()
    k = wait_until(lambda: _children(sc, sc.redis, h.id))[0]
    _suspended(sc, h.id)

    async def main() -> Any:
        from redflow_mp.aio import create_async_client

        ac = create_async_client(redis_url, prefix=prefix, default=False, shards=3)
        try:
            assert await ac.cancel_run(k) is True
            return await ac.handle(h.id).result(timeout=20)
        finally:
            await ac.aclose()

    assert asyncio.run(main()) == "child canceled"


def test_a_parent_id_given_by_hand_is_not_kicked(
    sc: Client, registry: Registry, sworkers: WorkerPool
) -> None:
    @define_workflow(name_on(sc, "hand", 1), queue="hq", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        return str(ctx.run.parent_run_id)

    sworkers.start(queues=["hq"])
    odd = sc.run_by_name(flow.name, None, parent_run_id="not-a-run~9999")  # no shard of ours
    other = sc.run_by_name(flow.name, None, parent_run_id="01J0000000000000000000000A~0")
    assert odd.result(timeout=20) == "not-a-run~9999"
    assert other.result(timeout=20) == "01J0000000000000000000000A~0"
    assert not sc.redis.exists(sc.shards[0].keys.run_kicked("01J0000000000000000000000A~0"))
    assert flow.run().result(timeout=20) == "None"  # the worker is still serving
