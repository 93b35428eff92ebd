"""Reaper (a run whose lease expired goes back to ready and runs again),
promoter, retention (finished runs removed run_retention after they finish;
0 keeps them)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunStatus, define_workflow
from redflow_mp.ids import new_token
from redflow_mp.maintenance import promote_due, reap_expired, sweep_retention
from redflow_supervisor.status import SupervisorStatus, write_supervisor_status
from tests.helpers import WorkerPool, status_of, text, wait_until

if TYPE_CHECKING:
    # mypy knows the supervisor package by its directory name (tests/ops/conftest.py)
    from supervisor.arbiter import Arbiter
    from supervisor.duties.keycheck import KeyCheckDuty
    from supervisor.duties.promoter import PromoterDuty
    from supervisor.duties.reaper import ReaperDuty
    from supervisor.duties.retention import RetentionDuty
    from supervisor.settings import load
else:
    from redflow_supervisor.arbiter import Arbiter
    from redflow_supervisor.duties.keycheck import KeyCheckDuty
    from redflow_supervisor.duties.promoter import PromoterDuty
    from redflow_supervisor.duties.reaper import ReaperDuty
    from redflow_supervisor.duties.retention import RetentionDuty
    from redflow_supervisor.settings import load

pytestmark = pytest.mark.timeout(60)


def test_reaper_requeues_a_run_whose_lease_expired(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    executions: list[int] = []

    @define_workflow("orphaned", registry=registry)
    def orphaned(ctx: Context[Any]) -> str:
        executions.append(ctx.run.attempt)
        return "recovered"

    handle = orphaned.run()
    # a "worker" claims it with a short lease and then vanishes
    _, claimed = client.scripts.claim(("default",), 150, new_token())
    assert claimed is not None and claimed.id == handle.id
    assert status_of(raw, client, handle.id) == "running"
    assert reap_expired(client) == (0, [])  # lease still live
    wait_until(lambda: client.server_time_ms() > claimed.started_at + 200, 5)
    assert reap_expired(client) == (0, [handle.id])
    assert status_of(raw, client, handle.id) == "queued"
    workers.start()
    assert handle.result(timeout=10) == "recovered"
    assert executions == [1]


def test_worker_maintenance_reaps_on_its_own(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("lost", registry=registry)
    def lost(ctx: Context[Any]) -> str:
        return "ran"

    handle = lost.run()
    client.scripts.claim(("default",), 150, new_token())
    workers.start()
    assert handle.result(timeout=10) == "ran"
    state = handle.state()
    assert (
        state is not None and state.last_crash is not None and "lease expired" in state.last_crash
    )


def test_promote_due_returns_count_and_next_due(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    @define_workflow("later", registry=registry)
    def later(ctx: Context[Any]) -> None:
        return None

    now_s = client.server_time_ms() / 1000
    a = later.run(run_at=now_s + 100)
    b = later.run(run_at=now_s + 200)
    promoted, earliest = promote_due(client)
    assert promoted == 0 and earliest is not None
    raw.zadd(client.keys.q_scheduled("default"), {a.id: 0})
    raw.zadd(client.keys.due_queues, {"default": 0})
    assert promote_due(client)[0] == 1
    assert status_of(raw, client, a.id) == "queued"
    assert status_of(raw, client, b.id) == "scheduled"


def _finished_run(client: Client, registry: Registry, workers: WorkerPool) -> str:
    wf = registry.get("kept")
    assert wf is not None
    handle = wf.run({"x": 1})
    handle.result(timeout=10)
    return handle.id


def test_retention_removes_finished_runs_after_the_period(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("kept", registry=registry)
    def kept(ctx: Context[Any]) -> str:
        ctx.step.run("s", lambda: 1)
        return "x"

    workers.start()
    old = _finished_run(client, registry, workers)
    fresh = _finished_run(client, registry, workers)
    pending = kept.run(run_at=client.server_time_ms() / 1000 + 3600)
    k = client.keys
    assert raw.exists(k.run_steps(old))
    retention_ms = 7 * 24 * 3600 * 1000
    assert sweep_retention(client, retention_ms) == 0
    # "old" finished eight days ago
    finished = client.get_run(old)
    assert finished is not None and finished.finished_at is not None
    raw.zadd(k.runs_status("succeeded"), {old: finished.finished_at - 8 * 24 * 3600 * 1000})
    assert sweep_retention(client, 0) == 0  # 0 keeps everything
    assert client.get_run(old) is not None
    assert sweep_retention(client, retention_ms) == 1
    assert client.get_run(old) is None
    assert client.get_run_steps(old) is None
    assert not raw.exists(k.run(old), k.run_steps(old))
    assert raw.zscore(k.runs_created, old) is None
    assert raw.zscore(k.workflow_runs("kept"), old) is None
    assert raw.zscore(k.runs_status("succeeded"), old) is None
    assert [r.id for r in client.list_runs(workflow="kept")] == [pending.id, fresh]
    state = client.get_run(fresh)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert status_of(raw, client, pending.id) == "scheduled"


def test_retention_with_a_short_period(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("kept", registry=registry)
    def kept(ctx: Context[Any]) -> str:
        return "x"

    workers.start()
    rid = _finished_run(client, registry, workers)
    finished_at = client.get_run(rid).finished_at  # type: ignore[union-attr]
    assert finished_at is not None
    wait_until(lambda: client.server_time_ms() > finished_at + 50, 5)
    assert sweep_retention(client, 50) == 1
    assert client.get_run(rid) is None


def test_heartbeat_keeps_a_long_run_from_being_reaped(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    executions: list[str] = []
    ttls: list[int] = []

    def lease_left_ms(run_id: str) -> int:
        """The lease's time left on the server's clock, read atomically (one script:
        a cluster refuses TIME in a pipeline): two round trips (expiry, then TIME)
        used to count the test's own stall between them against the lease on a
        loaded machine."""
        expiry, secs, micros = raw.eval(
            "local e = redis.call('ZSCORE', KEYS[1], ARGV[1]) "
            "local t = redis.call('TIME') return {e or '0', t[1], t[2]}",
            1,
            client.keys.leases,
            run_id,
        )
        return int(float(expiry)) - (int(secs) * 1000 + int(micros) // 1000)

    @define_workflow("long-haul", registry=registry)
    def long_haul(ctx: Context[Any]) -> str:
        executions.append(ctx.run.id)
        # 1.5 lease lengths (the default 5 s lease) pass while two other workers
        # reap every 0.2 s: the run outlives its first lease by renewals alone. A
        # 600 ms lease used to lapse when the machine starved the heartbeat thread
        # that long (a load of 15-20 on 2 cores), which is no defect: the
        # supervisor's parent renews too (SPEC 4), and at-least-once is the promise.
        deadline = client.server_time_ms() + 7_500
        while client.server_time_ms() < deadline:
            ttls.append(lease_left_ms(ctx.run.id))
            ctx.cancelled.wait(0.05)
        return "done once"

    for _ in range(3):
        workers.start()
    handle = long_haul.run()
    assert handle.result(timeout=20) == "done once"
    assert executions == [handle.id]
    assert ttls and min(ttls) > 0  # the lease never lapsed
    state = handle.state()
    assert state is not None and state.last_crash is None


def test_run_resumes_at_its_step_after_the_worker_vanished(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    from redflow_mp import codec

    calls: list[str] = []

    def step(name: str) -> str:
        calls.append(name)
        return name.upper()

    @define_workflow("resumable", registry=registry)
    def resumable(ctx: Context[Any]) -> list[Any]:
        return [ctx.step.run("a", step, "a"), ctx.step.run("b", step, "b")]

    handle = resumable.run()
    # a worker claims the run, completes step "a", then disappears
    tok = new_token()
    _, claimed = client.scripts.claim(("default",), 150, tok)
    assert claimed is not None
    record = codec.StoredStep(
        seq=0, status="succeeded", started_at=1, finished_at=2, attempt=1, output_json='"A"'
    )
    assert client.scripts.write_step(handle.id, tok, "a", codec.encode_step(record), 150) == (
        True,
        False,
    )
    workers.start()  # its maintenance reaps the expired lease, then runs the run
    assert handle.result(timeout=10) == ["A", "B"]
    assert calls == ["b"]  # the completed step was not executed again


def test_one_reaper_tick_finds_an_expired_lease_behind_250_runs_in_flight(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Issue 10 #3: more runs in flight on a queue than a reaper batch (their
    leases live), and a newer run whose supervisor died: one tick requeues it."""

    @define_workflow("long", queue="busy", max_concurrency=1_000, registry=registry)
    def long(ctx: Context[Any]) -> None:
        return None

    for _ in range(250):
        long.run()
        assert client.scripts.claim(("busy",), 600_000, new_token())[1] is not None
    lost = long.run()
    _, claimed = client.scripts.claim(("busy",), 100, new_token())
    assert claimed is not None and claimed.id == lost.id
    wait_until(lambda: client.server_time_ms() > claimed.started_at + 150, 5)
    duty = ReaperDuty(client, 500)
    duty.tick(0.0)
    assert duty.requeued == 1
    assert status_of(raw, client, lost.id) == "queued"


def test_retention_duty_forgets_empty_unserved_queues(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Issue 10 #10: the `queues` set no longer only grows. A queue is forgotten
    once it is empty and no live supervisor serves it."""
    k = client.keys
    idle = [f"idle-{i}" for i in range(1_000)]
    raw.sadd(k.queues, *idle)
    raw.lpush(k.q_bell("idle-7"), "1")
    client.run_by_name("job", queue_override="has-ready")
    client.run_by_name("job", queue_override="has-scheduled", run_at=time.time() + 3600)
    raw.sadd(k.queues, "served-here", "served-elsewhere")
    write_supervisor_status(
        client,
        SupervisorStatus(
            id="other:1", app="a", host="other", pid=1, started_at=0,
            updated_at=client.server_time_ms(), mode="running", leader=False,
            queues=["served-elsewhere"], procs=1,
        ),
    )  # fmt: skip
    duty = RetentionDuty(client, 0, queues=lambda: ("served-here",))
    for _ in range(20):
        duty.tick(0.0)
        if raw.scard(k.queues) == 4:
            break
    assert {text(q) for q in raw.smembers(k.queues)} == {
        "has-ready",
        "has-scheduled",
        "served-here",
        "served-elsewhere",
    }
    assert not raw.exists(k.q_bell("idle-7"))
    # a forgotten queue comes back with its next run
    client.run_by_name("job", queue_override="idle-3")
    assert raw.sismember(k.queues, "idle-3")


def test_the_retention_duty_outpaces_a_supervisor_while_a_backlog_lasts(
    raw: redis.Redis, client: Client
) -> None:
    """With a backlog the duty removed 2,000 runs per tick every 0.5 s: 4,000 runs
    a second (measured: 78,000 of a million old runs in 20 s), while one
    supervisor finishes up to ~8,000 no-op runs a second (docs/benchmarks.md,
    W1), so its finished runs piled up for good. Its capacity is now above that."""
    old = 1_000  # finished in 1970: long past any retention
    raw.zadd(client.keys.runs_status("succeeded"), {f"run-{i}": old for i in range(2_500)})
    raw.zadd(client.keys.runs_status("succeeded"), {f"run-{i}": old for i in range(2_500, 4_500)})
    # the tick's own time left out (a frozen clock): the schedule is what is tested
    duty = RetentionDuty(client, retention_s=7 * 24 * 3600, clock=lambda: 0.0)
    pages = 0
    forget = duty._forget

    def counted(now: float) -> None:
        nonlocal pages
        pages += 1
        forget(now)

    duty._forget = counted  # type: ignore[method-assign]
    due = duty.tick(100.0)
    assert duty.removed == 2_000
    assert duty.removed / (due - 100.0) >= 10_000  # runs per second of schedule
    due = duty.tick(due)
    assert duty.removed == 4_000 and due <= 100.2
    assert pages == 1  # idle queue names: a page per 0.5 s while the ticks come fast
    assert duty.tick(due) == due + duty.interval  # backlog gone: the usual pace
    assert duty.removed == 4_500 and raw.zcard(client.keys.runs_status("succeeded")) == 0
    assert pages == 2


def test_the_promoter_comes_back_at_once_after_a_full_tick(
    raw: redis.Redis, client: Client
) -> None:
    """A tick is bounded (100 x 100 calls: 10,000 runs); with more due it waited an
    interval before the next, so 100,000 timers due at once woke over 11 ticks,
    the last ones ten intervals late on top of the work. Now a tick that used
    all its calls is followed by another at once."""
    k = client.keys
    handles = client.run_many_by_name("job", [None] * 10_001, run_at=time.time() + 3600)
    assert len(handles) == 10_001
    # all due now (one script: 10,001 ZADDs)
    raw.eval(
        "local m = redis.call('ZRANGE', KEYS[1], 0, -1) "
        "for _, id in ipairs(m) do redis.call('ZADD', KEYS[1], ARGV[1], id) end "
        "redis.call('ZADD', KEYS[2], ARGV[1], 'default') return #m",
        2,
        k.q_scheduled("default"),
        k.due_queues,
        client.server_time_ms() - 1,
    )
    duty = PromoterDuty(client, 200)
    assert duty.tick(100.0) == 100.0  # 10,000 promoted, the tick's bound: again at once
    assert raw.zcard(k.q_ready("default")) == 10_000
    assert duty.tick(100.0) == 100.2  # the last one: back to the interval
    assert raw.zcard(k.q_ready("default")) == 10_001


def test_a_queues_listing_of_the_wrong_type_stops_no_reaper(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The reaper duty lists the queues it serves in ``queues`` (SADD) before it
    reaps; that key a string (another program, a typo), every tick failed there:
    no expired lease of any run was put back by any supervisor any more ("reaper
    duty failed: WRONGTYPE ..." every 10 s). The listing is skipped now."""

    @define_workflow("orphan", registry=registry)
    def orphan(ctx: Context[Any]) -> str:
        return "ok"

    handle = orphan.run()
    _, claimed = client.scripts.claim(("default",), 100, new_token())
    assert claimed is not None
    raw.set(client.keys.queues, "not a redflow key")
    wait_until(lambda: client.server_time_ms() > claimed.started_at + 150, 5)
    duty = ReaperDuty(client, 500, queues=lambda: ("default",))
    duty.tick(time.monotonic())
    assert status_of(raw, client, handle.id) == "queued"
    assert duty.requeued == 1


def test_the_key_check_names_each_shared_key_of_the_wrong_type(
    raw: redis.Redis, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A listing index of the wrong type no longer fails any script (it is
    skipped), so the supervisor looks for such keys itself: one pipeline of TYPE
    (at start, then every minute), an ERROR line per key with what it costs."""
    from tests.helpers import command_counts

    k = client.keys
    bad = {k.workflow_runs("wf"): "list", k.due_queues: "hash", k.q_scheduled("q"): "string"}
    raw.rpush(k.workflow_runs("wf"), "x")
    raw.hset(k.due_queues, "x", "y")
    raw.set(k.q_scheduled("q"), "x")
    raw.zadd(k.q_ready("q"), {"a": 1})  # of the right type: not named
    duty = KeyCheckDuty(client, ["wf", "other"], lambda: ("q", "r"))
    with caplog.at_level("ERROR", logger="redflow_supervisor"):
        counts = command_counts(raw, lambda: duty.tick(time.monotonic()))
    assert sorted(duty.found) == sorted(bad)
    for key, kind in bad.items():
        assert f"key {key} holds a {kind}, not a" in caplog.text
    assert set(counts) == {"type"}, counts


@pytest.mark.parametrize("bad", ["suspended", "wf-running"])
def test_the_metrics_gauges_survive_a_suspended_index_or_running_set_of_the_wrong_type(
    client: Client, registry: Registry, raw: redis.Redis, bad: str
) -> None:
    """A scrape's gauges read the suspended index (ZCARD) and each workflow's
    running set (SCARD); either of the wrong type raised a ResponseError out of
    gauges(), and the scrape served nothing at all (its connection dropped),
    counters and every other gauge included. The key is left out; the rest is
    served (the key check names it)."""
    from supervisor.duties.status import gauges

    @define_workflow("gw", registry=registry)
    def gw(ctx: Context[Any]) -> None:
        return None

    client.run_by_name("gw", 1, queue_override="gq")
    k = client.keys
    key = k.runs_status("suspended") if bad == "suspended" else k.wf_running("gw")
    raw.set(key, "not a redflow key")
    got = {(name, labels): value for name, labels, value in gauges(client, registry, 2, ["gq"])}
    assert got[("redflow_queue_depth", (("queue", "gq"), ("state", "ready")))] == 1.0
    if bad == "suspended":
        assert got[("redflow_workflow_running", (("workflow", "gw"),))] == 0.0
    else:
        assert got[("redflow_runs_suspended", ())] == 0.0


def test_only_the_leader_sweeps_finished_runs(
    raw: redis.Redis, client: Client, registry: Registry, redis_url: str, prefix: str
) -> None:
    """Every supervisor swept: with a backlog (a million runs past a shortened
    retention) one sweeper takes a third to a half of Redis's time, so ten
    supervisors held Redis busy all along for the same work. The arbiter's
    retention duty now sweeps only while its supervisor holds the leader lock."""
    settings = load({"url": redis_url, "prefix": prefix, "app": "a"}, environ={})
    arbiter = Arbiter(settings, registry)
    arbiter._build_duties(client)
    duties = {duty.name: duty for duty, _ in arbiter.schedule._due}
    leader, retention = duties["leader"], duties["retention"]

    def leads() -> bool:
        return arbiter.leader is not None and arbiter.leader.is_leader

    raw.set(client.keys.lock_cron, "another-supervisor", px=60_000)
    leader.tick(0.0)
    assert not leads()
    finished = client.keys.runs_status("succeeded")
    raw.zadd(finished, {f"run-{i}": 1_000 for i in range(300)})  # finished in 1970
    retention.tick(0.0)
    assert raw.zcard(finished) == 300, "a supervisor that does not lead swept runs"
    raw.delete(client.keys.lock_cron)
    leader.tick(1.0)
    assert leads()
    retention.tick(2.0)
    assert raw.zcard(finished) == 0


def test_each_sweep_call_removes_at_most_a_hundred_runs(raw: redis.Redis, client: Client) -> None:
    """A sweep call of 500 runs held Redis for 12 ms on average and up to 50 ms
    with a million old runs (benchmarks/maintenance_scale.py), in front of every
    claim and finish; 100 a call take ~2.5 ms, and a tick still removes 2,000."""
    raw.zadd(client.keys.runs_status("succeeded"), {f"run-{i}": 1_000 for i in range(2_500)})
    batches: list[int] = []
    sweep_step = client.scripts.sweep_step

    def recorded(retention_ms: int, batch: int) -> tuple[int, bool]:
        batches.append(batch)
        return sweep_step(retention_ms, batch)

    client.scripts.sweep_step = recorded  # type: ignore[method-assign]
    duty = RetentionDuty(client, retention_s=7 * 24 * 3600, clock=lambda: 0.0)
    duty.tick(0.0)
    assert max(batches) <= 100, f"sweep calls of {max(batches)} runs"
    assert duty.removed == 2_000


def test_the_reaper_names_a_few_requeued_runs_and_counts_the_rest(
    client: Client, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A warning per requeued run: a supervisor gone with 100,000 runs in flight
    made the next reaper tick write 100,000 lines (the arbiter's loop waiting on
    them). Twenty are named, the rest counted in one line."""

    @define_workflow("wide", registry=registry, max_concurrency=1_000)
    def wide(ctx: Context[Any]) -> None:
        return None

    client.run_many_by_name("wide", [None] * 100)
    token = new_token()
    claimed = [client.scripts.claim(("default",), 1, token)[1] for _ in range(100)]
    assert all(c is not None for c in claimed)
    wait_until(lambda: client.server_time_ms() > max(c.started_at for c in claimed if c) + 5, 5)
    with caplog.at_level("WARNING", logger="redflow_mp.maintenance"):
        assert len(reap_expired(client)[1]) == 100
    lines = [r.getMessage() for r in caplog.records if r.name == "redflow_mp.maintenance"]
    assert len(lines) <= 21, f"{len(lines)} warnings for 100 requeued runs"
    assert lines[-1].startswith("80 more runs: lease expired")


def test_promoter_and_reaper_calls_move_at_most_a_hundred_runs(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A promoter call moved up to 500 runs (4.6 ms of Redis on average, up to
    16 ms, with a million due), a reaper call 200 (4 ms, up to 11 ms, with
    100,000 expired leases): benchmarks/maintenance_scale.py. 100 a call now;
    a tick still moves up to 10,000."""

    @define_workflow("wide", registry=registry, max_concurrency=1_000)
    def wide(ctx: Context[Any]) -> None:
        return None

    batches: dict[str, list[int]] = {"promote": [], "wake_timers": [], "reap_guarded": []}
    for name, calls in batches.items():
        real = getattr(client.scripts, name)

        def recorded(batch: int, *args: Any, _real: Any = real, _calls: list[int] = calls) -> Any:
            _calls.append(batch)
            return _real(batch, *args)

        setattr(client.scripts, name, recorded)
    client.run_many_by_name("wide", [None] * 250, run_at=time.time() + 3600)
    k = client.keys
    raw.eval(  # all due now
        "local m = redis.call('ZRANGE', KEYS[1], 0, -1) "
        "for _, id in ipairs(m) do redis.call('ZADD', KEYS[1], ARGV[1], id) end "
        "redis.call('ZADD', KEYS[2], ARGV[1], 'default') return #m",
        2,
        k.q_scheduled("default"),
        k.due_queues,
        client.server_time_ms() - 1,
    )
    PromoterDuty(client, 200).tick(0.0)
    assert raw.zcard(k.q_ready("default")) == 250
    token = new_token()
    claimed = [client.scripts.claim(("default",), 1, token)[1] for _ in range(250)]
    wait_until(lambda: client.server_time_ms() > max(c.started_at for c in claimed if c) + 5, 5)
    duty = ReaperDuty(client, 500)
    duty.tick(0.0)
    assert duty.requeued == 250
    for name, calls in batches.items():
        assert calls and max(calls) <= 100, f"{name} calls of {max(calls)} runs"


def test_the_reaper_lists_the_served_queues_when_they_change_and_each_minute(
    raw: redis.Redis, client: Client
) -> None:
    """The reaper added every served queue name to `queues` every half second: at
    1,000 queues the largest cost of a supervisor at rest (about 160 us of Redis
    a second). Now: at its first tick, when the served queues change, and once a
    minute (a FLUSHALL lost the listing)."""
    from tests.helpers import command_counts

    served = tuple(f"q{i}" for i in range(1000))
    current = [served]
    duty = ReaperDuty(client, 500, queues=lambda: current[0])
    t0 = time.monotonic()
    counts = command_counts(
        raw,
        lambda: [duty.tick(t0 + 0.5 * i) for i in range(20)],  # 10 s of ticks
    )
    assert counts.get("sadd", 0) == 1, counts
    assert raw.scard(client.keys.queues) == 1000
    current[0] = (*served, "q-new")  # a reload serves another queue: listed at once
    counts = command_counts(raw, lambda: duty.tick(t0 + 10.5))
    assert counts.get("sadd", 0) == 1 and raw.sismember(client.keys.queues, "q-new")
    raw.delete(client.keys.queues)  # lost (FLUSHALL): back within the minute
    duty.tick(t0 + 11.0)
    assert raw.scard(client.keys.queues) == 0
    duty.tick(t0 + 71.0)
    assert raw.scard(client.keys.queues) == 1001
