"""Chaos cases the other files lack, at the product's defaults (lease 5 s): the
supervisor's parent SIGKILLed alone (its children orphaned) while they hold
leases, then a new one started; ``redis-server`` SIGSTOPped past the lease;
supervisors TERMed under load and SIGKILLed in the middle of their drain;
supervisors killed while runs are suspended with every event sent during the
outage; two supervisors of different ``--procs`` on one Redis. After each: the
invariants (I1-I11), then the concurrency gate is checked: no ``wf-running``
slot is left once every run finished, and new runs of a ``max_concurrency=2``
workflow still start (a leaked slot parks them for good)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from functools import partial
from typing import Any

import psutil
import pytest
import redis

from redflow_mp import create_client
from tests.faults.drivers import TERMINAL, wait_for
from tests.faults.harness import RESULTS, CaseResult, Faults
from tests.faults.invariants import Report
from tests.faults.outages import ready_pair
from tests.faults.processes import (
    WAIT_MODULES,
    busy_children,
    restart_redis,
    running_leases,
    taken_over,
)
from tests.faults.workload import WORKFLOWS
from tests.helpers import texts
from tests.process.conftest import Supervisor

# Opt-in (``-m soak``): 13 cases of 18-45 s each, 3.5-5 min on 2 cores, would take
# CI past its budget; run them before a release and after a change to recovery:
#   .venv/bin/python -m pytest tests/faults/test_chaos.py -m soak -p no:cacheprovider
pytestmark = [pytest.mark.faults, pytest.mark.soak, pytest.mark.timeout(300)]


def _gate_probe(fx: Faults, url: str, n: int = 12) -> float:
    """Once every run is terminal, enqueue ``n`` runs of ``fx-limited``
    (max_concurrency 2) and wait for each: a slot leaked by the chaos parks them
    for good. Returns the seconds taken."""
    raw = redis.Redis.from_url(url)
    try:
        assert fx.settle(raw, 60), "runs left unfinished before the gate probe"
    finally:
        raw.close()
    return _limited_runs(fx, url, n, 10_000_000)


def _limited_runs(fx: Faults, url: str, n: int, first: int) -> float:
    """Enqueue ``n`` runs of ``fx-limited`` (inputs from ``first``) and wait for
    each; returns the seconds taken."""
    client = create_client(url, prefix=fx.prefix, default=False)
    t = time.monotonic()
    try:
        handles = [WORKFLOWS["fx-limited"].run(first + i, client=client) for i in range(n)]
        for h in handles:
            h.result(timeout=60)
    finally:
        client.close()
    return time.monotonic() - t


def _two_supervisors(
    fx: Faults, url: str, procs: tuple[int, int], **options: Any
) -> tuple[Supervisor, Supervisor]:
    """Two supervisors of ``procs[0]`` and ``procs[1]`` children (``options``: the
    rest of :meth:`Faults.supervisor`'s), each with every child started."""
    a = fx.supervisor(url, procs=procs[0], **options)
    b = fx.supervisor(url, procs=procs[1], **options)
    a.wait_workers(procs[0])
    b.wait_workers(procs[1])
    return a, b


def _probe_and_finish(
    fx: Faults, raw: redis.Redis, url: str, case: str, recovery_s: float | None, note: str
) -> Report:
    """:func:`_gate_probe`, then :func:`_finish_clean` with the probe's time in the note."""
    probe = _gate_probe(fx, url)
    return _finish_clean(fx, raw, case, recovery_s, f"{note}; gate probe {probe:.1f} s")


def _finish_clean(
    fx: Faults, raw: redis.Redis, case: str, recovery_s: float | None, note: str
) -> Report:
    """A case's end: :meth:`Faults.finish`, every run succeeded and every invariant
    held, no ``wf-running`` slot leaked; closes ``raw``."""
    report = fx.finish(raw, case, recovery_s=recovery_s, note=note)
    report.assert_ok(all_succeeded=True)
    assert not _leaked_slots(raw, fx.prefix)
    raw.close()
    return report


def _leaked_slots(raw: redis.Redis, prefix: str) -> dict[str, list[str]]:
    """``wf-running`` members once every run is terminal (supervisors stopped)."""
    tag = "{" + prefix + "}"
    out: dict[str, list[str]] = {}
    for key in texts(raw.keys(f"{tag}:wf-running:*")):
        members = texts(raw.smembers(key))
        if members:
            out[key] = members
    return out


def _orphans(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return parent.children()
    except psutil.Error:
        return []


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_parent_sigkilled_alone_children_orphaned_then_a_new_supervisor(fx: Faults) -> None:
    """SIGKILL the arbiter only (the OOM killer picks it) of one of two supervisors
    (2 and 3 children) while its children hold leases, start a new one at once;
    three times. The orphans finish their runs and leave; nobody else executes
    those runs meanwhile (I8: the fault names no pid the orphans' executions ran
    under, so an overlap is not excused)."""
    server = fx.redis()
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (2, 3))
    prod = fx.producer(server.url, 900, rate=120).start()
    recoveries: list[float] = []
    orphans_seen = 0
    for _ in range(3):
        busy = wait_for(partial(busy_children, a), 20, "a busy child")
        held = running_leases(raw, fx.prefix, [rid for _, rid in busy])
        parent = psutil.Process(a.pid)
        kids = _orphans(parent)
        # pids=[-1]: not the pid of any supervisor, so I8 does not excuse overlaps
        t = fx.fault("parent-kill", [-1], parent=a.pid, orphans=[k.pid for k in kids])
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        orphans_seen += len(kids)
        a = fx.supervisor(server.url, procs=2)
        a.wait_workers(2)
        wait_for(
            lambda ks=kids: all(_gone(k) for k in ks),  # type: ignore[misc]
            90,
            "the orphans to leave",
            0.05,
        )
        wait_for(
            lambda h=held: (
                taken_over(raw, fx.prefix, h) or not running_leases(raw, fx.prefix, list(h))
            ),  # type: ignore[misc]
            30,
            "the orphans' runs to be finished or taken over",
        )
        recoveries.append(time.monotonic() - t)
    prod.wait(120)
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C1. SIGKILL the parent alone (orphans) + new supervisor (x3)",
        max(recoveries),
        f"kill -> orphans gone; {orphans_seen} orphans",
    )


def test_redis_sigstopped_past_the_lease(fx: Faults) -> None:
    """SIGSTOP ``redis-server`` 8 s (past the 5 s lease and the 5 s socket timeout)
    while two supervisors run, SIGCONT; twice. Every lease lapses by the server's
    clock during the stop: the stall guard must keep the reapers from taking runs
    from their live workers, and every connection must come back."""
    server = fx.redis()
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2)
    prod = fx.producer(server.url, 700, rate=100).start()
    prog = fx.sample(server.url)
    recoveries: list[float] = []
    assert server.proc is not None
    for _ in range(2):
        wait_for(partial(busy_children, sups[0]), 20, "a busy child")
        fx.fault("redis-stop", seconds=8.5)
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(8)  # the fault's length, not synchronisation
        os.kill(server.proc.pid, signal.SIGCONT)
        t = time.monotonic()
        first = wait_for(
            lambda s=t: prog.first_progress_after(s),  # type: ignore[misc]
            60,
            "a run finishing after the SIGCONT",
        )
        recoveries.append(first)
        time.sleep(2)
    prod.wait(180)
    probe = _gate_probe(fx, server.url)
    for sup in sups:
        assert sup.proc is not None and sup.proc.poll() is None, sup.log()[-3000:]
    _finish_clean(
        fx,
        raw,
        "C2. redis-server SIGSTOP 8 s (x2)",
        max(recoveries),
        f"SIGCONT -> first run finished; gate probe {probe:.1f} s",
    )


def test_supervisors_termed_under_load_and_killed_mid_drain(fx: Faults) -> None:
    """TERM a supervisor under load and start its replacement at once; TERM the
    next and SIGKILL its whole group 1 s into the drain; then TERM one with a
    graceful drain of a slow run and SIGKILL its children alone mid-drain."""
    server = fx.redis()
    raw = server.client()
    a, b = _two_supervisors(fx, server.url, (2, 2))
    prod = fx.producer(server.url, 900, rate=120).start()
    # 1. a plain graceful drain, its replacement started at once
    wait_for(partial(busy_children, a), 20, "a busy child")
    a.send(signal.SIGTERM)
    new_a = fx.supervisor(server.url, procs=2)
    assert a.wait(60) == 0, a.log()[-3000:]
    a = new_a
    a.wait_workers(2)
    # 2. TERM, then the whole group SIGKILLed 1 s into the drain
    wait_for(partial(busy_children, b), 20, "a busy child")
    b.send(signal.SIGTERM)
    time.sleep(1.0)
    stranded = running_leases(raw, fx.prefix)
    t = fx.kill_group(b)
    b = fx.supervisor(server.url, procs=2)
    b.wait_workers(2)
    wait_for(partial(taken_over, raw, fx.prefix, stranded), 30, "the stranded runs")
    recovery = time.monotonic() - t
    # 3. TERM, then the draining children SIGKILLed (the parent lives)
    busy = wait_for(partial(busy_children, a), 20, "a busy child")
    a.send(signal.SIGTERM)
    time.sleep(0.3)
    pids = [p.pid for p, _ in busy]
    fx.fault("kill", pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert a.wait(60) == 0, a.log()[-3000:]
    a = fx.supervisor(server.url, procs=2)
    a.wait_workers(2)
    prod.wait(120)
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C3. TERM under load; SIGKILL mid-drain (group, children)",
        recovery,
        "kill mid-drain -> stranded runs taken",
    )


def _suspended(raw: redis.Redis, fx: Faults) -> int:
    return int(raw.zcard(f"{{{fx.prefix}}}:runs:status:suspended"))


#: When the sleepers of test_events_sent_while_no_supervisor_runs are due (s after
#: they are enqueued; the supervisor is killed before).
SLEEP_S = 20.0


def test_events_sent_while_no_supervisor_runs(fx: Faults) -> None:
    """500 runs suspended (200 listeners, 150 parents of a listening child, 150
    sleepers due while nobody runs); SIGKILL the only supervisor; send every event
    while it is down, wait past the lease and the sleepers' time; start it again:
    every run finishes, executed exactly twice (suspend, resume)."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
    sup.wait_workers(2)
    items: list[tuple[str, Any, str | None]] = []
    items += [("fx-wparent", {"n": 1, "child": "listener"}, None) for _ in range(150)]
    items += [("fx-listener", {"k": 1}, None) for _ in range(200)]
    fx.producer(server.url, 0, items=items).start().wait(120)
    wait_for(lambda: _suspended(raw, fx) == 500, 120, "500 suspended runs", 0.1)
    t0 = time.time()
    # due 20-22 s on: the supervisor is killed before (enqueuing and suspending the
    # 150 took up to 10 s on a loaded machine, where 12 s was left)
    sleepers = [("fx-sleeper", {"until": t0 + SLEEP_S + (i % 3)}, None) for i in range(150)]
    fx.producer(server.url, 0, items=sleepers).start().wait(60)
    wait_for(lambda: _suspended(raw, fx) == 650, 60, "650 suspended runs", 0.1)
    # a precondition, not a bound on the product: every sleeper is due after the kill
    assert time.time() < t0 + SLEEP_S, "the sleepers suspended too late to wake during the outage"
    t_kill = fx.kill_group(sup)
    tag = f"{{{fx.prefix}}}"
    listeners = [
        rid
        for rid in texts(raw.zrange(f"{tag}:runs:status:suspended", 0, -1))
        if raw.hget(f"{tag}:run:{rid}", "workflow") == b"fx-listener"
    ]
    assert len(listeners) == 350
    snd = fx.sender(server.url)
    for rid in listeners:
        snd.put(rid, "go", f"{rid}:0")
    snd.drain(60)
    assert snd.sent == 350 and not snd.refused
    wait_for(lambda: time.time() > t0 + SLEEP_S + 3.5, 60, "the sleepers' wake-up time")
    watcher = fx.watch_waits(server.url)
    with watcher.paused():  # overdue wake-ups: the bound counts from the restart
        sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
        sup.wait_workers(2)
    t_up = time.monotonic()
    settled = fx.settle(raw, 90)
    recovery = time.monotonic() - t_up
    report = _probe_and_finish(
        fx,
        raw,
        server.url,
        "C4. SIGKILL supervisor, events sent while it is down",
        recovery,
        f"restart -> all 650 finished; down {t_up - t_kill:.1f} s",
    )
    assert settled
    assert watcher.snapshots > 2
    assert report.events_sent == 350 == report.events_consumed


def test_many_queues_with_limits_under_kills_of_every_kind(fx: Faults) -> None:
    """1,200 runs over 40 queues (``queue_override``), half of them of the
    ``max_concurrency=2`` workflow, on two supervisors of 1 and 4 children:
    children SIGKILLed, a whole supervisor SIGKILLed, a parent SIGKILLed alone,
    each replaced at once. The gate must hold (I4) and leak no slot."""
    server = fx.redis()
    raw = server.client()
    queues = [f"q{i}" for i in range(40)]
    args = ["--queues", ",".join([*queues, "fx"]), "--max-run-crashes", "1000"]
    a, b = _two_supervisors(fx, server.url, (1, 4), args=args)
    rng = random.Random(5)
    items = [
        ("fx-limited" if rng.random() < 0.5 else "fx-chain", i, rng.choice(queues))
        for i in range(1200)
    ]
    ids: list[str] = []

    def produce() -> None:
        client = create_client(server.url, prefix=fx.prefix, default=False)
        try:
            started = time.monotonic()
            for i, (wf, value, queue) in enumerate(items):
                pause = started + i / 100 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                rid = client.enqueue_workflow(WORKFLOWS[wf], value, queue_override=queue).id
                fx.ledger.append("enqueued", run=rid, wf=wf, key=None)
                ids.append(rid)
        finally:
            client.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    kills = {"child": 0, "group": 0, "parent": 0}
    plan = ["child", "group", "child", "parent", "child", "child", "group", "parent"]
    for kind in plan:
        sup = rng.choice([a, b])
        busy = wait_for(partial(busy_children, sup), 30, "a busy child")
        if kind == "child":
            proc, run_id = rng.choice(busy)
            fx.fault("kill", [proc.pid], run=run_id)
            proc.send_signal(signal.SIGKILL)
        else:
            procs = 1 if sup is a else 4
            if kind == "group":
                fx.kill_group(sup)
            else:
                fx.fault("parent-kill", [-1], parent=sup.pid)
                os.kill(sup.pid, signal.SIGKILL)
                sup.wait(timeout=10)
            new = fx.supervisor(server.url, procs=procs, args=args)
            new.wait_workers(procs)
            if sup is a:
                a = new
            else:
                b = new
        kills[kind] += 1
        time.sleep(rng.uniform(0.5, 1.5))  # pacing of the fault injection
    thread.join(120)
    assert not thread.is_alive() and len(ids) == len(items), f"enqueued {len(ids)}"
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C5. 40 queues, max_concurrency 2, procs 1+4, kills of every kind",
        None,
        f"kills {kills}",
    )


def test_cron_leader_termed_stopped_and_parent_killed_at_fire_times(fx: Faults) -> None:
    """Two supervisors with a cron firing every second: the leader TERMed 2 ms
    before a fire time (its replacement started at once), the next leader's whole
    group SIGSTOPped 12 s (past the 10 s lock TTL) across fire times then
    SIGCONTed, the next leader's parent SIGKILLed alone at a fire time. No fire
    time produces two runs, and fires resume after each."""
    from tests.faults.test_cron_skew import MODULES, _check_fires, _fires, _leader, _stop_schedule

    server = fx.redis()
    raw = server.client()
    sups = ready_pair(fx, server.url, procs=2, modules=MODULES)
    prod = fx.producer(server.url, 400, rate=40).start()
    tag = "{" + fx.prefix + "}"
    clock = create_client(server.url, prefix=fx.prefix, default=False)
    gaps: list[float] = []
    try:
        for kind in ("term", "stop", "parent"):
            leader = _leader(sups)
            wait_for(lambda: len(_fires(raw, fx.prefix)) >= 2, 30, "cron fires")
            due = wait_for(
                lambda: raw.zrange(f"{tag}:cron:next", 0, 0, withscores=True),
                10,
                "the next fire time",
            )
            fire_ms = int(due[0][1])
            wait_for(lambda f=fire_ms: clock.server_time_ms() >= f - 2, 5, "the fire time", 0.0005)  # type: ignore[misc]
            t = time.monotonic()
            if kind == "term":
                fx.fault("term", [-1], parent=leader.pid)
                leader.send(signal.SIGTERM)
                sups.append(fx.supervisor(server.url, procs=2, modules=MODULES))
                assert leader.wait(60) == 0, leader.log()[-3000:]
                sups.remove(leader)
            elif kind == "stop":
                pids = fx.group_pids(leader)
                fx.stop(pids, group=leader.pid)
                time.sleep(12)  # past the lock TTL: the fault's length
                fx.fault("cont", pids)
                leader.kill_group(signal.SIGCONT)
            else:
                fx.fault("parent-kill", [-1], parent=leader.pid)
                os.kill(leader.pid, signal.SIGKILL)
                leader.wait(timeout=10)
                sups.remove(leader)
                sups.append(fx.supervisor(server.url, procs=2, modules=MODULES))
            wait_for(
                lambda f=fire_ms: any(x > f for x in _fires(raw, fx.prefix)),  # type: ignore[misc]
                40,
                f"a fire after the {kind}",
            )
            gaps.append(time.monotonic() - t)
            for sup in sups:
                sup.wait_workers(2)
        prod.wait(60)
    finally:
        clock.close()
    _stop_schedule(raw, fx.prefix)
    fires = _fires(raw, fx.prefix)
    report = fx.finish(
        raw,
        "C6. cron leader TERMed / SIGSTOPped 12 s / parent SIGKILLed at fire times",
        recovery_s=max(gaps),
        note=f"fault -> next fire: {', '.join(f'{g:.1f} s' for g in gaps)}; {len(fires)} fires",
    )
    _check_fires(fires)
    assert report.cron_runs == len(fires) >= 6
    # Fires resumed after each fault (the waits above, 40 s at most); a new leader
    # takes over within the lock TTL (10 s) and a cron tick (the stop's gap has its
    # 12 s). The gaps are reported, not bounded (20 s and 30 s were: each is timers
    # and process start-ups, which a loaded machine stretches).
    report.assert_ok(all_succeeded=True)
    raw.close()


def _all_in_redis_terminal(raw: redis.Redis, prefix: str, timeout: float) -> list[str]:
    """Wait until every run Redis knows is terminal (no progress for ``timeout``
    s ends the wait); returns the ones that are not."""
    tag = "{" + prefix + "}"
    best, since = None, time.monotonic()
    while True:
        ids = texts(raw.zrange(f"{tag}:runs:created", 0, -1))
        with raw.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hget(f"{tag}:run:{rid}", "status")
            statuses = pipe.execute()
        left = [i for i, s in zip(ids, statuses, strict=True) if s not in TERMINAL]
        if not left:
            return []
        if best is None or len(left) < best:
            best, since = len(left), time.monotonic()
        if time.monotonic() - since > timeout:
            return left
        time.sleep(0.2)


def test_redis_restarted_from_an_older_rdb_snapshot(fx: Faults) -> None:
    """No AOF: a BGSAVE, 3 s more of work, SIGKILL ``redis-server``, restart it 2 s
    later from that snapshot. The work after the snapshot is lost (runs acknowledged
    after it are gone, runs finished after it are back in flight: they execute
    again; that is what the snapshot's age costs). What must hold: every run the
    restored server holds finishes, the supervisors recover on their own, their
    connections and leases come back, no run executes twice at once beyond the
    outage, and the gate leaks no slot."""
    server = fx.redis()
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=2, args=["--max-run-crashes", "1000"])]
    sups.append(fx.supervisor(server.url, procs=3, args=["--max-run-crashes", "1000"]))
    sups[0].wait_workers(2)
    sups[1].wait_workers(3)
    prod = fx.producer(server.url, 900, rate=120).start()
    wait_for(lambda: len(prod.ids) >= 300, 60, "300 runs enqueued")
    last = raw.lastsave()
    before_save = len(prod.ids)
    raw.bgsave()
    wait_for(lambda: raw.lastsave() != last, 30, "the snapshot", 0.05)
    acked_at_save = len(prod.ids)
    time.sleep(3)  # work the snapshot will not have
    acked_at_kill = len(prod.ids)
    fx.fault("redis-kill", seconds=2.5)
    t_down, t_up = restart_redis(server, 2.0)
    raw.close()
    raw = server.client()
    acked_at_restart = len(prod.ids)
    prod.wait(180)
    left = _all_in_redis_terminal(raw, fx.prefix, 60)
    assert not left, f"{len(left)} runs the restored server holds never finished: {left[:5]}"
    probe = _gate_probe_after_loss(fx, server.url)
    for sup in sups:
        assert sup.proc is not None and sup.proc.poll() is None, sup.log()[-3000:]
    fx.stop_all()
    report = fx.check(raw)
    # What the lost seconds explain: runs acknowledged after the snapshot (I1, I6:
    # a key acknowledged then lost maps to a new run later), records acknowledged
    # after it (I3). Nothing else may be violated.
    allowed = ("I1:", "I3:", "I6:")
    other = [v for v in report.violations if not v.startswith(allowed)]
    print(f"\n[C7. RDB restore] {report.summary()}")
    RESULTS.append(
        CaseResult(
            "C7. redis-server restarted from a 3 s old RDB snapshot",
            report.runs,
            len(report.lost),
            len(report.reexecuted),
            t_up - t_down,
            f"lost = acknowledged after the snapshot ({acked_at_kill - acked_at_save} in the "
            f"3 s before the kill); gate probe {probe:.1f} s",
        )
    )
    assert not other, "\n".join(other[:20])
    lost_ok = set(prod.ids[before_save:acked_at_restart])
    assert set(report.lost) <= lost_ok, (
        "a run acknowledged before the snapshot or after the restart was lost"
    )
    assert report.lost, "the snapshot lost nothing: the case tested no loss"
    assert not report.stuck, report.stuck[:10]
    assert not report.double_executions
    assert not _leaked_slots(raw, fx.prefix)
    raw.close()


def _gate_probe_after_loss(fx: Faults, url: str, n: int = 12) -> float:
    return _limited_runs(fx, url, n, 20_000_000)


def test_parent_sigstopped_alone_while_its_children_work_and_one_dies(fx: Faults) -> None:
    """SIGSTOP the arbiter alone of one of two supervisors for 8 s (past the lease)
    while its children keep working, SIGKILL one of its busy children during the
    stop, SIGCONT; twice. The dead child's run is taken by the other supervisor's
    reaper a lease later; the resumed parent, finding its child dead, must not put
    back a run another process now holds, nor stop its live children."""
    server = fx.redis()
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (3, 2), args=["--max-run-crashes", "1000"])
    prod = fx.producer(server.url, 900, rate=100).start()
    recoveries: list[float] = []
    for _ in range(2):
        wait_for(partial(busy_children, a), 20, "a busy child")
        # pids=[-1]: the children live on, so I8 excuses no overlap of theirs
        fx.fault("parent-stop", [-1], parent=a.pid, seconds=8)
        os.kill(a.pid, signal.SIGSTOP)

        def leased() -> tuple[psutil.Process, str, dict[str, bytes]] | None:
            """A busy child of the stopped parent whose run holds a live lease (a run
            that just ended would be 'taken over' at once, measuring nothing)."""
            for proc, run_id in busy_children(a):
                held = running_leases(raw, fx.prefix, [run_id])
                if held:
                    return proc, run_id, held
            return None

        proc, run_id, held = wait_for(leased, 20, "a leased run of the stopped parent's")
        t = fx.fault("kill", [proc.pid], run=run_id)
        proc.send_signal(signal.SIGKILL)
        wait_for(partial(taken_over, raw, fx.prefix, held), 30, "the dead child's run")
        recoveries.append(time.monotonic() - t)
        time.sleep(max(0.0, 8 - (time.monotonic() - t)))
        os.kill(a.pid, signal.SIGCONT)
        a.wait_workers(3, timeout=40)
        time.sleep(1)
    prod.wait(120)
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C8. parent SIGSTOPped 8 s alone, a busy child SIGKILLed meanwhile (x2)",
        max(recoveries),
        "kill -> run taken by the other supervisor (lease 5 s)",
    )
    for sup in fx.sups:
        assert "Traceback" not in sup.log(), sup.log()[-3000:]


def test_rolling_restarts_and_resizes_under_kills(fx: Faults) -> None:
    """HUP (rolling restart of the children), TTIN and TTOU under load while busy
    children are SIGKILLed in the middle of the roll, then the parent SIGKILLed
    alone during a roll and a new supervisor started. The supervisor comes back
    to its size each time; no run lost, none executed twice at once."""
    server = fx.redis()
    raw = server.client()
    args = ["--max-run-crashes", "1000"]
    a, _b = _two_supervisors(fx, server.url, (3, 2), args=args)
    prod = fx.producer(server.url, 900, rate=110).start()
    rng = random.Random(3)
    kills = 0
    for sig, size in ((signal.SIGHUP, 3), (signal.SIGTTIN, 4), (signal.SIGHUP, 4)):
        wait_for(partial(busy_children, a), 20, "a busy child")
        a.send(sig)
        time.sleep(0.2)
        busy = busy_children(a)
        if busy:
            proc, run_id = rng.choice(busy)
            fx.fault("kill", [proc.pid], run=run_id)
            proc.send_signal(signal.SIGKILL)
            kills += 1
        a.wait_workers(size, timeout=60)
        time.sleep(1.5)
    a.send(signal.SIGTTOU)
    a.wait_workers(3, timeout=60)
    wait_for(partial(busy_children, a), 20, "a busy child")
    a.send(signal.SIGHUP)
    time.sleep(0.3)
    fx.fault("parent-kill", [-1], parent=a.pid)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    a = fx.supervisor(server.url, procs=3, args=args)
    a.wait_workers(3)
    prod.wait(120)
    probe = _gate_probe(fx, server.url)
    for sup in fx.sups:
        assert "Traceback" not in sup.log(), sup.log()[-3000:]
    _finish_clean(
        fx,
        raw,
        "C9. HUP/TTIN/TTOU under load, children and a rolling parent SIGKILLed",
        None,
        f"{kills} child kills mid-roll; gate probe {probe:.1f} s",
    )


def test_supervisor_started_while_redis_is_down(fx: Faults) -> None:
    """A host loses power: ``redis-server`` (AOF) and a supervisor are SIGKILLed at
    once; the supervisor is started again before Redis is (8 s before: a unit
    restarted by systemd, Redis still replaying), and a second one 2 s later. Each
    must wait for Redis and then serve, not exit."""
    server = fx.redis("--appendonly", "yes", "--appendfsync", "always")
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (2, 2))
    prod = fx.producer(server.url, 700, rate=100).start()
    wait_for(partial(busy_children, a), 20, "a busy child")
    fx.fault("redis-kill", seconds=9)
    fx.kill_group(a)
    server.kill()
    t_down = time.monotonic()
    if server.proc is not None and server.proc.stderr is not None:
        server.proc.stderr.close()
    server.proc = None
    a = fx.supervisor(server.url, procs=2)
    time.sleep(2)
    c = fx.supervisor(server.url, procs=2)
    wait_for(lambda: time.monotonic() - t_down >= 8, 20, "the outage")
    for sup in (a, c):
        assert sup.proc is not None and sup.proc.poll() is None, (
            "a supervisor started while Redis was down exited:\n" + sup.log()[-3000:]
        )
    server.start()
    t_up = time.monotonic()
    raw.close()
    raw = server.client()
    a.wait_workers(2, timeout=60)
    c.wait_workers(2, timeout=60)
    prog = fx.sample(server.url)
    first = wait_for(
        lambda: prog.first_progress_after(t_up), 60, "a run finishing after the restart"
    )
    prod.wait(180)
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C10. supervisors started while redis-server is down (8 s), then Redis (AOF)",
        first,
        "Redis up -> first run finished",
    )


def test_waits_under_a_parent_kill_and_a_redis_sigstop(fx: Faults) -> None:
    """Sleepers, two-event listeners and parents of two children on two
    supervisors while events arrive: supervisor A's parent SIGKILLed alone (its
    orphans finish what they hold: suspend or finish) and a new one started, then
    ``redis-server`` SIGSTOPped 7 s (past the lease; timers fall due during it).
    Every run resumes once its condition holds, once (I9-I11)."""
    from tests.faults.test_waits import _Background

    server = fx.redis()
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (2, 3), modules=WAIT_MODULES)
    watcher = fx.watch_waits(server.url)
    prog = fx.sample(server.url)
    rng = random.Random(8)
    items: list[tuple[str, Any, str | None]] = []
    for i in range(120):
        items.append(("fx-sleeper", {"s": rng.choice((0.5, 2.0, 4.0))}, None))
        items.append(("fx-listener", {"k": 2}, f"c11-listener-{i}"))
    for _ in range(30):
        items.append(("fx-wparent", {"n": 2}, None))
    rng.shuffle(items)
    prod = fx.producer(server.url, 0, items=items, rate=50).start()
    snd = fx.sender(server.url, rate=40)
    sending = _Background(prod, items, snd)
    wait_for(lambda: _suspended(raw, fx) >= 20, 30, "runs suspended")
    with watcher.paused():
        wait_for(partial(busy_children, a), 20, "a busy child")
        kids = _orphans(psutil.Process(a.pid))
        fx.fault("parent-kill", [-1], parent=a.pid)
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        a = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
        a.wait_workers(2)
        wait_for(lambda: all(_gone(k) for k in kids), 90, "the orphans to leave", 0.05)
    wait_for(lambda: _suspended(raw, fx) >= 20, 30, "runs suspended")
    assert server.proc is not None
    with watcher.paused():
        fx.fault("redis-stop", seconds=7.5)
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(7)  # the fault's length
        os.kill(server.proc.pid, signal.SIGCONT)
        t = time.monotonic()
        first = wait_for(lambda: prog.first_progress_after(t), 60, "progress after SIGCONT")
    sending.join(180)
    settled = fx.settle(raw, 120)
    report = _finish_clean(
        fx,
        raw,
        "C11. waits: parent SIGKILLed alone + redis-server SIGSTOP 7 s",
        first,
        f"SIGCONT -> first run finished; send retries {snd.retries}",
    )
    assert settled
    assert report.events_sent == 240 == report.events_consumed
    assert watcher.snapshots > 5


def test_supervisor_termed_while_redis_is_stopped(fx: Faults) -> None:
    """``redis-server`` SIGSTOPped 10 s; supervisor A TERMed 1 s into it (a deploy
    during a Redis stall). A drains as far as it can and exits within its
    graceful timeout plus its kill grace; B rides the stall out; every run
    finishes after the SIGCONT."""
    server = fx.redis()
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (2, 2))
    prod = fx.producer(server.url, 600, rate=100).start()
    wait_for(partial(busy_children, a), 20, "a busy child")
    assert server.proc is not None
    fx.fault("redis-stop", seconds=10.5)
    os.kill(server.proc.pid, signal.SIGSTOP)
    time.sleep(1)
    t_term = time.monotonic()
    a.send(signal.SIGTERM)
    time.sleep(9)  # the rest of the fault
    os.kill(server.proc.pid, signal.SIGCONT)
    code = a.wait(60)
    exited = time.monotonic() - t_term
    assert code == 0, a.log()[-3000:]
    a = fx.supervisor(server.url, procs=2)
    a.wait_workers(2)
    prod.wait(120)
    _probe_and_finish(
        fx,
        raw,
        server.url,
        "C12. supervisor TERMed during a 10 s redis-server SIGSTOP",
        exited,
        "TERM -> exit",
    )


def test_a_whole_supervisor_sigstopped_past_the_stall_bound_keeps_its_children(
    fx: Faults,
) -> None:
    """SIGSTOP the only supervisor's whole group 20 s (past the 15 s stall bound
    of liveness.py) while it is busy, SIGCONT. Its children were stopped because everything was:
    none of them stalled on its own. They resume their runs; the parent must not
    take them for stopped (kill them and charge their runs a crash)."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2)
    sup.wait_workers(2)
    prod = fx.producer(server.url, 300, rate=60).start()
    wait_for(partial(busy_children, sup), 20, "a busy child")
    pids = fx.group_pids(sup)
    fx.stop(pids, group=sup.pid)
    time.sleep(20)  # the fault's length: past the stall bound (3 leases, 15 s)
    fx.fault("cont", pids)
    sup.kill_group(signal.SIGCONT)
    prod.wait(120)
    stalls = [line for line in sup.log().splitlines() if "made no progress" in line]
    report = fx.finish(
        raw,
        "C13. the only supervisor SIGSTOPped 20 s (past the stall bound)",
        recovery_s=None,
        note=f"{len(stalls)} children taken for stopped",
    )
    assert not stalls, "\n".join(stalls)
    assert not report.failures, report.summary()
    report.assert_ok(all_succeeded=True)
    raw.close()


#: C14: how long redis-server stays stopped (s), past graceful_timeout + kill_grace.
STALL_S = 100.0
#: C14: the TERMed supervisor's bound (s): graceful_timeout 30 + kill_grace 5 (the
#: defaults), plus scheduling on a loaded machine. Before the fix it kept no bound
#: while Redis was stopped (75 s later its children still lived).
EXIT_BOUND_S = 40.0


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_supervisor_termed_while_redis_stays_stopped_past_its_graceful_timeout(
    fx: Faults,
) -> None:
    """``redis-server`` SIGSTOPped 100 s; supervisor A TERMed 1 s into it (a deploy
    during a Redis stall). A must stop its children and exit within its graceful
    timeout and kill grace, Redis still stopped (``drainclock.py``): before, its
    loop saw the TERM only once a blocked Redis call gave up, ran every periodic
    duty while draining (each blocked a socket timeout or more), and looked at the
    drain's deadline only once Redis answered again. The runs it could not put
    back keep their leases until they lapse; B and a new A finish every run."""
    server = fx.redis()
    raw = server.client()
    a, _b = _two_supervisors(fx, server.url, (2, 2))
    prod = fx.producer(server.url, 400, rate=100).start()
    wait_for(partial(busy_children, a), 20, "a busy child")
    kids = _orphans(psutil.Process(a.pid))
    assert server.proc is not None
    t = fx.fault("redis-stop", seconds=STALL_S + 0.5)
    os.kill(server.proc.pid, signal.SIGSTOP)
    time.sleep(1)
    t_term = time.monotonic()
    a.send(signal.SIGTERM)
    gone: float | None = None
    code: int | None = None
    while time.monotonic() - t_term < EXIT_BOUND_S:
        if gone is None and all(_gone(k) for k in kids):
            gone = time.monotonic() - t_term
        assert a.proc is not None
        code = a.proc.poll()
        if code is not None:
            break
        time.sleep(0.1)
    exited = time.monotonic() - t_term
    if gone is None and all(_gone(k) for k in kids):
        gone = exited
    wait_for(lambda: time.monotonic() - t >= STALL_S, STALL_S + 10, "the stall")
    os.kill(server.proc.pid, signal.SIGCONT)
    assert code is not None and gone is not None, (
        f"a TERMed supervisor had not exited {exited:.0f} s later, Redis stopped "
        f"(children gone after {gone} s):\n" + a.log()[-3000:]
    )
    assert code == 0, a.log()[-3000:]
    a = fx.supervisor(server.url, procs=2)
    a.wait_workers(2)
    prod.wait(120)
    fx.finish_ok(
        raw,
        "C14. supervisor TERMed during a 100 s redis-server SIGSTOP",
        recovery_s=exited,
        note=f"TERM -> children gone {gone:.1f} s, exit {exited:.1f} s (Redis still stopped)",
    )
    raw.close()
