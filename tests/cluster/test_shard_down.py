"""``shards = 3`` on a cluster where one shard's master is gone for good (no
replica; ``cluster-require-full-coverage no``, so the other masters keep serving
their slots): the runs of the other shards must still be claimed and finished,
by every worker, whichever shard it blocks on."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from redflow_mp import Registry, Worker, create_client, define_workflow
from redflow_mp.client import set_default_client
from redflow_mp.ids import new_run_id
from redflow_mp.shardpass import SHARD_DOWN_RETRY
from tests.servers import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("home", [1, 2])
def test_workers_keep_serving_the_shards_whose_master_is_up(
    cluster_factory: Callable[..., Cluster], registry: Registry, home: int
) -> None:
    """Before the fix, a claim pass that reached the dead shard raised and the
    whole pass was retried with backoff: a worker whose home is the dead shard
    never claimed another shard's run, and one whose pass tries the dead shard
    before shard 0 never reached shard 0 (``ResultTimeoutError: run ...~0 did
    not finish within 30 s``)."""
    cluster = cluster_factory(full_coverage=False)
    prefix = f"down-{os.getpid()}"
    c = create_client(cluster.url, prefix=prefix, registry=registry, default=False, shards=3)
    worker: Worker | None = None
    thread: threading.Thread | None = None
    try:
        names = {
            k: next(f"w{i}" for i in range(1000) if c.shard_of_workflow(f"w{i}").index == k)
            for k in range(3)
        }
        flows: dict[int, Any] = {
            k: define_workflow(name, queue="dq", registry=registry)(lambda ctx: ctx.input)
            for k, name in names.items()
        }
        c.sync_registry(registry, app="t")
        dead_shard = 2
        dead = cluster.node_for_slot(key_slot(f"{c.shards[dead_shard].keys.tag}:x".encode()))
        dead.kill()  # refuses connections at once (a hung host: docs/operations.md)
        scripts = c.shards[dead_shard].scripts
        real_claim = scripts.claim
        tries: list[float] = []

        def claim(*args: Any, **kwargs: Any) -> Any:
            tries.append(time.monotonic())
            return real_claim(*args, **kwargs)

        scripts.claim = claim  # type: ignore[method-assign]
        # home 2: the dead shard itself; home 1: its pass tries shard 2 before 0
        worker = Worker(c, registry=registry, queues=["dq"], home_shard=home)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        handles = [flows[k].run(i) for k in (0, 1) for i in range(10)]
        deadline = time.monotonic() + 30
        got = [h.result(timeout=max(0.1, deadline - time.monotonic())) for h in handles]
        assert got == list(range(10)) * 2
        # the dead shard's first failed claim is resent at once (its reply may be
        # the one lost: shardpass.py), then the shard is tried again at most every
        # SHARD_DOWN_RETRY s (a master that hangs instead of refusing costs a
        # timeout per try)
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert len(tries) >= 2 and all(gap >= SHARD_DOWN_RETRY for gap in gaps[1:]), gaps
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            thread.join(30)
            assert not thread.is_alive()
        c.close()
        set_default_client(None)


def test_the_promoter_and_reaper_cover_the_shards_after_one_that_is_down(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The promoter's and the reaper's ticks went through the shards in order and
    stopped at the first error: with shard 1's master down, shard 2's due run
    was never promoted and its expired lease never reaped (``AssertionError:
    shard 2's due run promoted`` before the fix). Each tick now covers every shard
    it can reach, then raises the first error (the duty's warning)."""
    from supervisor.duties.promoter import PromoterDuty
    from supervisor.duties.reaper import ReaperDuty

    cluster = cluster_factory(full_coverage=False)
    prefix = f"duty-{os.getpid()}"
    c = create_client(cluster.url, prefix=prefix, registry=Registry(), default=False, shards=3)
    try:
        live = c.shards[2]
        wf = next(f"w{i}" for i in range(1000) if c.shard_of_workflow(f"w{i}").index == 2)
        held, _ = live.scripts.enqueue(
            live.run_id(new_run_id()), wf, "dq", b"1", 1, 0, "", 0, "", "", None, None
        )
        _r, claimed = live.scripts.claim(("dq",), 100, "tok")  # a worker that dies
        assert claimed is not None and claimed.id == held
        # enqueued after the claim, which would take it were it due by then (a loaded machine)
        now_ms = c.server_time_ms()
        due, _ = live.scripts.enqueue(
            live.run_id(new_run_id()), wf, "dq", b"1", 1, now_ms + 300, "", 0, "", "", None, None
        )
        down = cluster.node_for_slot(key_slot(f"{c.shards[1].keys.tag}:x".encode()))
        down.kill()
        promoter, reaper = PromoterDuty(c, 200), ReaperDuty(c, 500, queues=lambda: ("dq",))

        def ticked(duty: Any, run_id: str, wanted: str) -> bool:
            with contextlib.suppress(RedisConnectionError):
                duty.tick(time.monotonic())
            return live.redis.hget(live.keys.run(run_id), "status") == wanted.encode()

        wait_for(lambda: ticked(promoter, due, "queued"), 15, "shard 2's due run promoted")
        wait_for(lambda: ticked(reaper, held, "queued"), 15, "shard 2's expired lease reaped")
        with pytest.raises(RedisConnectionError):  # the shard down is still reported
            promoter.tick(time.monotonic())
    finally:
        c.close()


def test_the_cron_leader_fires_the_shards_after_one_that_is_down(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The cron duty stopped at the first shard whose ``cron_tick`` failed, and the
    leader lock's tick at the first lock copy it could not renew: with shard 1's
    master down, shard 2's crons no longer fired (before the fix: ``assert 0 ==
    1``, runs fired in shard 2; and the leader's tick raised ``ConnectionError:
    Error 111 connecting to ...``, keeping no copy after shard 1)."""
    import msgspec

    from redflow_mp.cron import CronDef
    from supervisor.duties.cron import CronDuty
    from supervisor.duties.leader import LeaderDuty

    cluster = cluster_factory(full_coverage=False)
    prefix = f"cron-{os.getpid()}"
    c = create_client(cluster.url, prefix=prefix, registry=Registry(), default=False, shards=3)
    try:
        wfs = {
            k: next(f"cw{i}" for i in range(1000) if c.shard_of_workflow(f"cw{i}").index == k)
            for k in range(3)
        }

        def due_now(name: str) -> None:  # a new cron (a fire time fires once)
            now = c.server_time_ms()
            for k in (0, 2):
                shard, cid = c.shards[k], f"{wfs[k]}:{name}"
                record = CronDef(
                    id=cid,
                    workflow=wfs[k],
                    queue="cq",
                    expression="* * * * *",
                    timezone="UTC",
                    input_json="1",
                )
                shard.redis.hset(shard.keys.cron_def, cid, msgspec.json.encode(record))
                shard.redis.zadd(shard.keys.cron_next, {cid: now - 10})

        def fired_in_2() -> int:
            shard = c.shards[2]
            return int(shard.redis.zcard(shard.keys.workflow_runs(wfs[2])))

        due_now("a")
        leader = LeaderDuty(c, 3000)
        leader.tick(time.monotonic())
        assert all(leader.holds(k) for k in range(3))
        cluster.node_for_slot(key_slot(f"{c.shards[1].keys.tag}:x".encode())).kill()
        duty = CronDuty(c, leader)
        with contextlib.suppress(RedisConnectionError):  # shard 1's failure, reported
            duty.tick(time.monotonic())
        assert fired_in_2() == 1
        # the leader's next tick keeps the copies it can renew, drops shard 1's
        leader.tick(time.monotonic())
        assert leader.is_leader and leader.holds(2) and not leader.holds(1)
        due_now("b")
        duty.tick(time.monotonic())
        assert fired_in_2() == 2
    finally:
        c.close()


def test_retention_sweeps_the_shards_after_one_that_is_down(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The retention duty's sweep stopped at the first shard that failed: with
    shard 1's master down, shard 2's finished runs past their retention stayed
    (``assert 0 == 1``: removed, before the fix)."""
    from supervisor.duties.retention import RetentionDuty

    cluster = cluster_factory(full_coverage=False)
    prefix = f"ret-{os.getpid()}"
    c = create_client(cluster.url, prefix=prefix, registry=Registry(), default=False, shards=3)
    try:
        live = c.shards[2]
        wf = next(f"w{i}" for i in range(1000) if c.shard_of_workflow(f"w{i}").index == 2)
        run_id, _ = live.scripts.enqueue(
            live.run_id(new_run_id()), wf, "dq", b"1", 1, 0, "", 0, "", "", None, None
        )
        assert live.scripts.cancel(run_id, "done") == "canceled"
        finished_ms = c.shards[2].redis.hget(live.keys.run(run_id), "finishedAt")
        assert finished_ms is not None
        wait_for(lambda: c.server_time_ms() > int(finished_ms) + 20, 5, "retention passed")
        cluster.node_for_slot(key_slot(f"{c.shards[1].keys.tag}:x".encode())).kill()
        duty = RetentionDuty(c, retention_s=0.01)
        with pytest.raises(RedisConnectionError):  # shard 1's failure is reported
            duty.tick(time.monotonic())
        assert duty.removed == 1
        assert live.redis.exists(live.keys.run(run_id)) == 0
    finally:
        c.close()


@pytest.mark.timeout(300)  # three ticks, each blocking one routed call (up to ~25 s)
def test_a_stalled_master_blocks_a_duty_tick_once_and_the_other_masters_are_served(
    cluster_factory: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A master STOPPED (SIGSTOP: calls time out instead of being refused) holding
    two shards of six: a tick of the promoter or of the cron duty calls it once
    (its other shard is skipped, ``ServerStalled``; before, each shard's call
    blocked its timeouts in turn) and still serves the shards of the other
    masters in the same tick (``supervisor/duties/shards.py``)."""
    import msgspec
    import redis

    from redflow_mp.cron import CronDef
    from supervisor.duties import cron as cron_module
    from supervisor.duties import promoter as promoter_module
    from supervisor.duties.cron import CronDuty
    from supervisor.duties.leader import LeaderDuty
    from supervisor.duties.promoter import PromoterDuty

    n = 6
    cluster = cluster_factory(full_coverage=False)
    # a prefix with two shards or more on a master that does not hold shard 0 (the
    # leader lock's, whose failure ends the leader's tick)
    for attempt in range(100):
        c = create_client(
            cluster.url, prefix=f"stall{attempt}", registry=Registry(), default=False, shards=n
        )
        node_of = {
            k: cluster.node_for_slot(key_slot(f"{c.shards[k].keys.tag}:x".encode()))
            for k in range(n)
        }
        by_node: dict[int, list[int]] = {}
        for k, node in node_of.items():
            by_node.setdefault(node.port, []).append(k)
        if any(len(ks) >= 2 and 0 not in ks for ks in by_node.values()):
            break
        c.close()
    stopped = None
    try:
        stalled = next(ks for ks in by_node.values() if len(ks) >= 2 and 0 not in ks)
        live = [k for k in range(n) if k not in stalled]
        wfs = {
            k: next(f"w{i}" for i in range(2000) if c.shard_of_workflow(f"w{i}").index == k)
            for k in range(n)
        }
        now_ms = c.server_time_ms()
        due = {}
        for k in live:
            shard = c.shards[k]
            due[k], _ = shard.scripts.enqueue(
                shard.run_id(new_run_id()),
                wfs[k],
                "dq",
                b"1",
                1,
                now_ms + 200,
                "",
                0,
                "",
                "",
                None,
                None,
            )
            cid = f"{wfs[k]}:c"
            record = CronDef(
                id=cid,
                workflow=wfs[k],
                queue="cq",
                expression="* * * * *",
                timezone="UTC",
                input_json="1",
            )
            shard.redis.hset(shard.keys.cron_def, cid, msgspec.json.encode(record))
            shard.redis.zadd(shard.keys.cron_next, {cid: now_ms - 10})
        wait_for(lambda: c.server_time_ms() > now_ms + 250, 5, "the runs due")
        runs = {
            k: int(c.shards[k].redis.zcard(c.shards[k].keys.workflow_runs(wfs[k]))) for k in live
        }
        leader = LeaderDuty(c, 60_000)
        leader.tick(time.monotonic())
        assert all(leader.holds(k) for k in range(n))
        calls: list[int] = []

        def counting(real: Callable[..., Any]) -> Callable[..., Any]:
            def call(store: Any, *args: Any, **kwargs: Any) -> Any:
                calls.append(store.index)
                return real(store, *args, **kwargs)

            return call

        for module, name in ((promoter_module, "promote_due"), (cron_module, "cron_tick")):
            monkeypatch.setattr(module, name, counting(getattr(module, name)))
        copy = leader.lock._tick_copy

        def tick_copy(i: int) -> bool:
            calls.append(i)
            return copy(i)

        monkeypatch.setattr(leader.lock, "_tick_copy", tick_copy)
        stopped = node_of[stalled[0]]
        assert stopped.proc is not None
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        promoter, cron = PromoterDuty(c, 200), CronDuty(c, leader)
        for duty in (promoter, cron):
            calls.clear()
            with pytest.raises(redis.TimeoutError):  # the stalled master, reported
                duty.tick(time.monotonic())
            # one call blocked on the stopped master, none after it; every live shard served
            assert sum(k in stalled for k in calls) == 1, (duty.name, calls, stalled)
            assert sorted(k for k in calls if k in live) == live, (duty.name, calls)
            assert isinstance(duty.stalls.error, redis.TimeoutError), duty.name
        # the leader's tick renews the copies it reaches, its stalled ones called once
        calls.clear()
        leader.tick(time.monotonic())
        assert sum(k in stalled for k in calls) == 1, ("leader", calls, stalled)
        assert isinstance(leader.stalls.error, redis.TimeoutError)
        assert leader.is_leader and all(leader.holds(k) for k in live)
        assert not any(leader.holds(k) for k in stalled)
        for k in live:
            shard = c.shards[k]
            status = shard.redis.hget(shard.keys.run(due[k]), "status")
            assert status == b"queued", (k, status)  # promoted in that one tick
            fired = int(shard.redis.zcard(shard.keys.workflow_runs(wfs[k]))) - runs[k]
            assert fired == 1, (k, fired)  # its cron fired in that one tick
    finally:
        if stopped is not None and stopped.proc is not None:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        c.close()
