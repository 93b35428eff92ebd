"""Chaos cases of chaos12 next to C1-C14 (``test_chaos.py``), default settings
(lease 5 s): the whole server paused (``CLIENT PAUSE 10000 ALL``) past the
lease while runs execute; every client connection killed (``CLIENT KILL TYPE
normal``) over and over during a drain of 5,000 runs; durable sleeps across a
graceful supervisor restart; ``max_concurrency`` counted by the handlers
themselves in Redis while their workers are SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from typing import Any

import pytest

from redflow_mp import create_client
from tests.faults import ledger
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import WAIT_MODULES, busy_children
from tests.faults.test_cron_skew import (
    CRON_LOCK_TTL_S,
    _check_fires,
    _fires,
    _kill_leader_at_the_next_fire,
    _leader,
    _stop_schedule,
)
from tests.faults.test_cron_skew import MODULES as CRON_MODULES
from tests.faults.workload_counted import COUNTED_MAX
from tests.helpers import command, text

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

COUNTED_MODULES = ("tests.faults.workload", "tests.faults.workload_counted")


def _events(fx: Faults, kind: str) -> list[dict[str, Any]]:
    return [ev for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == kind]


def test_client_pause_all_past_the_lease(fx: Faults) -> None:
    """``CLIENT PAUSE 10000 ALL`` (twice the 5 s lease) while two supervisors
    execute runs: every command waits, reads included; when it ends every lease
    looks expired to Redis. No run is lost or executed twice at once, no completed
    step runs again."""
    server = fx.redis()
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=2) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    prog = fx.sample(server.url)
    prod = fx.producer(server.url, 700, rate=100).start()
    wait_for(lambda: busy_children(sups[0]) and busy_children(sups[1]), 20, "busy children")
    fx.fault("pause", seconds=10.0)
    command(raw, "CLIENT", "PAUSE", 10000, "ALL")
    t_end = time.monotonic() + 10.0
    wait_for(lambda: time.monotonic() >= t_end, 15, "the end of the pause")
    wait_for(lambda: prog.first_progress_after(t_end) is not None, 60, "progress after the pause")
    recovery = prog.first_progress_after(t_end) or 0.0
    prod.wait(120)
    fx.assert_no_crash()
    fx.finish_ok(
        raw,
        "chaos12. CLIENT PAUSE 10000 ALL (past the 5 s lease)",
        recovery_s=recovery,
        note="pause end -> first run finished",
    )
    raw.close()


def test_client_kill_repeated_during_a_drain(fx: Faults) -> None:
    """1,200 runs queued up front (with their children, about 1,500), then two
    supervisors drain them while every client connection is killed 6 times."""
    _client_kill_during_drain(fx, 1200, 6)


@pytest.mark.soak
@pytest.mark.timeout(1200)
def test_soak_client_kill_repeated_during_a_drain_of_5000_runs(fx: Faults) -> None:
    """The same with 5,000 runs (about 6,000 with their children), 12 kills."""
    _client_kill_during_drain(fx, 5000, 12)


def _client_kill_during_drain(fx: Faults, n: int, times: int) -> None:
    """``n`` runs queued up front, then two supervisors drain them while every
    client connection (theirs: workers, duties, the parent's) is killed ``times``
    times, each after another share of the runs finished."""
    server = fx.redis()
    raw = server.client()
    prod = fx.producer(server.url, n).start()
    prod.wait(120)
    sups = [fx.supervisor(server.url, procs=2) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    total = len(prod.ids)
    t0 = time.monotonic()
    kills = 0
    for k in range(1, times + 1):

        def drained(share: float = k / (times + 1)) -> bool:
            return total - fx.unfinished(raw) >= share * total

        wait_for(drained, 120, f"{k}/{times + 1} of the drain", 0.05)
        fx.fault("client-kill", seconds=1)
        killed = command(raw, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        kills += 1
        assert int(killed) >= 4, f"CLIENT KILL closed {killed} connections"
    settled = fx.settle(raw, 60)
    fx.assert_no_crash()
    fx.finish_ok(
        raw,
        f"chaos12. CLIENT KILL TYPE normal x{kills} during a drain of {n:,} runs",
        recovery_s=time.monotonic() - t0,
        note="supervisors up -> drained",
        settled=settled,
    )
    raw.close()


def test_durable_sleeps_across_a_graceful_supervisor_restart(fx: Faults) -> None:
    """300 runs asleep (``ctx.step.sleep`` 3-7 s) when their only supervisor is
    TERMed; a new one is started once it exited. Each sleeper wakes once, not
    before its time (``wait-early``), executed exactly twice."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
    sup.wait_workers(2)
    watcher = fx.watch_waits(server.url)
    until = time.time() + 20
    items = [("fx-sleeper", {"until": until + (i % 5)}, None) for i in range(300)]
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60)
    tag = f"{{{fx.prefix}}}"
    wait_for(lambda: raw.zcard(f"{tag}:runs:status:suspended") == 300, 60, "300 sleeping runs", 0.1)
    assert time.time() < until, "the sleepers were due before the restart"
    with watcher.paused():
        fx.fault("term", [-1], parent=sup.pid)
        sup.send(signal.SIGTERM)
        assert sup.wait(60) == 0, sup.log()[-3000:]
        assert raw.zcard(f"{tag}:runs:status:suspended") == 300
        sup = fx.supervisor(server.url, procs=2, modules=WAIT_MODULES)
        sup.wait_workers(2)
    assert time.time() < until, "the restart took past the sleepers' time"
    settled = fx.settle(raw, 60)
    fx.finish_ok(
        raw,
        "chaos12. 300 durable sleeps across a supervisor TERM + restart",
        recovery_s=None,
        note="each woke once",
        settled=settled,
    )
    execs = Counter(ev["run"] for ev in _events(fx, "handler-start"))
    assert sorted(set(execs.values())) == [2], Counter(execs.values())
    assert not _events(fx, "wait-early")
    raw.close()


def test_max_concurrency_counted_by_handlers_under_worker_kills(fx: Faults) -> None:
    """200 runs of ``fx-counted`` (``max_concurrency`` 2) on two supervisors of
    three children; busy children running it SIGKILLed 12 times (a run at most
    twice: the default ``max_run_crashes`` is 3). The handlers never saw more
    than 2 of them running at once (their own count in Redis, live processes)."""
    rng = random.Random(5)
    server = fx.redis()
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=3, modules=COUNTED_MODULES) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(3)
    items = [("fx-counted", i, None) for i in range(200)]
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60)
    killed: Counter[str] = Counter()
    while sum(killed.values()) < 12 and fx.unfinished(raw) > 20:
        busy = [(p, r) for sup in sups for p, r in busy_children(sup) if killed[r] < 2]
        if not busy:
            time.sleep(0.05)  # polling the process titles, as wait_for does
            continue
        proc, rid = rng.choice(busy)
        fx.fault("kill", [proc.pid], run=rid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        killed[rid] += 1
        # the next kill once a few more runs started (events, not time)
        seen = len(_events(fx, "counted"))

        def started(before: int = seen) -> bool:
            return len(_events(fx, "counted")) >= before + 5

        wait_for(started, 60, "more runs", 0.05)
    settled = fx.settle(raw, 60)
    fx.finish_ok(
        raw,
        f"chaos12. max_concurrency {COUNTED_MAX} counted by handlers, "
        f"{sum(killed.values())} worker kills",
        recovery_s=None,
        note="handlers' own count",
        settled=settled,
    )
    counts = [int(ev["n"]) for ev in _events(fx, "counted")]
    over = [ev for ev in _events(fx, "counted") if int(ev["n"]) > COUNTED_MAX]
    assert not over, over[:5]
    assert len(counts) >= 200 and max(counts) == COUNTED_MAX
    assert sum(killed.values()) >= 6
    print(f"counted: {len(counts)} executions, max {max(counts)}, kills {sum(killed.values())}")
    raw.close()


def test_parent_sigkilled_while_its_children_run_past_the_lease(fx: Faults) -> None:
    """Runs of two 4 s steps (``fx-slow`` with 200 ms steps: a run outlives the
    5 s lease) on supervisor A; SIGKILL A's parent
    alone while both its children are in a run, start a new supervisor at once.
    The orphans finish their runs (their heartbeat keeps the leases: nobody else
    executes them, I8 with no supervisor pid named), start no other run, and
    leave; every run succeeds, no completed step runs again."""
    server = fx.redis()
    raw = server.client()
    slow = {"FAULTS_STEP_MS": "200"}
    a = fx.supervisor(server.url, procs=2, env=slow)
    a.wait_workers(2)
    items = [("fx-slow", i, None) for i in range(6)]
    prod = fx.producer(server.url, 0, items=items).start()
    prod.wait(60)
    busy = wait_for(lambda: len(busy_children(a)) == 2 and busy_children(a), 60, "2 busy", 0.05)
    orphans = [p for p, _ in busy]
    t_kill = ledger.mono_ns()
    fx.fault("parent-kill", [-1], parent=a.pid, orphans=[p.pid for p in orphans])
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    b = fx.supervisor(server.url, procs=2, env=slow)
    b.wait_workers(2)

    def left() -> bool:
        for proc in orphans:
            with contextlib.suppress(Exception):
                if proc.status() != "zombie":
                    return False
        return True

    wait_for(left, 120, "the orphans to leave", 0.05)
    t_left = ledger.mono_ns()
    settled = fx.settle(raw, 60)
    fx.finish_ok(
        raw,
        "chaos12. parent SIGKILLed alone, its 2 orphans mid-run past the 5 s lease",
        recovery_s=(t_left - t_kill) / 1e9,
        note="kill -> orphans gone",
        settled=settled,
    )
    pids = {p.pid for p in orphans}
    mine = [ev for ev in ledger.read_all(fx.ledger_dir) if ev["pid"] in pids]
    # An orphan starts no run but the one it held when its parent died (its title
    # says "running <id>" from the claim on: that handler may start after the
    # death, with ppid 1, as both did in some plays)
    held = {p.pid: rid for p, rid in busy}
    after = [
        ev
        for ev in mine
        if ev["ev"] == "handler-start" and ev["ppid"] != a.pid and held[ev["pid"]] != ev["run"]
    ]
    assert not after, f"an orphan started a run it did not hold at the kill: {after}"
    execs = Counter(ev["run"] for ev in _events(fx, "handler-start"))
    assert sorted(set(execs.values())) == [1], execs
    raw.close()


def _cron_runs(raw: Any, tag: str) -> dict[int, str]:
    """{fire time ms: run id} of the fx-tick runs (their idempotency keys)."""
    out: dict[int, str] = {}
    for r in raw.zrange(f"{tag}:workflow-runs:fx-tick", 0, -1):
        key = raw.hget(f"{tag}:run:{text(r)}", "idempotencyKey")
        if key:
            out[int(text(key).rsplit(":", 1)[1])] = text(r)
    return out


def test_cron_fire_time_missed_by_a_killed_leader_fires_late_once(fx: Faults) -> None:
    """Cron every second, two supervisors: the leader's whole group SIGKILLed
    2 ms before a fire time, twice. That fire time is not skipped: the next
    leader (once the dead one's 10 s lock expired) fires it late, once, then the
    next from now (docs/operations.md: 10 to 13.3 s late once with the
    defaults); no fire time produced two runs."""
    server = fx.redis()
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=2, modules=CRON_MODULES) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    tag = "{" + fx.prefix + "}"
    clock = create_client(server.url, prefix=fx.prefix, default=False)
    missed: list[int] = []
    try:
        for _ in range(2):
            leader = _leader(sups)
            have = len(_fires(raw, fx.prefix))
            wait_for(lambda h=have: len(_fires(raw, fx.prefix)) >= h + 2, 20, "cron fires")  # type: ignore[misc]
            fire_ms, _ = _kill_leader_at_the_next_fire(
                fx, raw, clock, sups, leader, CRON_LOCK_TTL_S + 20
            )
            missed.append(fire_ms)
    finally:
        clock.close()
    _stop_schedule(raw, fx.prefix)
    fires = _fires(raw, fx.prefix)
    late = []
    for f in missed:
        assert f in fires, f"fire time {f} was skipped: fires {fires}"
        rid = _cron_runs(raw, tag)[f]
        late.append((int(raw.hget(f"{tag}:run:{rid}", "createdAt") or 0) - f) / 1000)
    report = fx.finish(
        raw,
        "chaos12. cron leader group SIGKILLed 2 ms before a fire time x2",
        recovery_s=max(late),
        note=f"the missed fire time fired late once ({', '.join(f'{s:.1f}' for s in late)} s)",
    )
    _check_fires(fires)
    report.assert_ok(all_succeeded=True)
    print(f"cron: {len(fires)} fires, missed fire times fired {late} s late")
    raw.close()
