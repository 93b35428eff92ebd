"""Paged durable waits under faults (chaos12): a parent fanning out over more
than ``SUSPEND_PAGE`` (1,000) children registers their wake-ups a page a call
(``await_children.lua``) then suspends (``suspend_run.lua``, paged). Its worker
is SIGKILLed before, during and after each of those calls and children are
SIGKILLed meanwhile (P1); the same with Redis restarts (AOF, fsync always) and a
supervisor TERMed mid-flight (P2, soak); a child fails or is canceled while the
pages are registered (P3). Each parent finishes exactly once, with every output
in order; no completed step ran twice (I1-I11)."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from tests.faults import ledger
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import WAIT_MODULES, busy_children, restart_redis
from tests.helpers import texts

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PAGED_MODULES = (*WAIT_MODULES, "tests.faults.workload_paged")
AOF = ("--appendonly", "yes", "--appendfsync", "always")
#: P1/P2: a kill timed by a run (a child's 0-3 ms after its step, a parent's
#: ``during:`` one) lands on whatever run its process holds by then, a woken
#: parent included: with the default max_run_crashes (3) a parent the case killed
#: three times failed as a poison pill (the rule working; 1 run in about 15 plays)
KILLS = ("--max-run-crashes", "1000")

#: P1: the kill points of each parent, one per execution (``workload_paged.py``);
#: two per parent: a third would fail it (default ``max_run_crashes`` 3).
P1_POINTS = (
    ["after:await_children:1", "during:suspend_run"],
    ["during:await_children:1", "before:suspend_run"],
    ["before:await_children:2", "after:suspend_run"],
)


def _events(fx: Faults, kind: str) -> list[dict[str, Any]]:
    return [ev for ev in ledger.read_all(fx.ledger_dir) if ev["ev"] == kind]


def _parent_plan(rng: random.Random, n: int, points: list[str], child_kills: int) -> dict[str, Any]:
    kills = {str(i): rng.randrange(3000) for i in rng.sample(range(n), child_kills)}
    return {"n": n, "points": points, "delay_us": rng.randrange(2000), "child_kills": kills}


def _output(raw: redis.Redis, fx: Faults, run_id: str) -> Any:
    value = raw.hget(f"{{{fx.prefix}}}:run:{run_id}", "outputJson")
    return json.loads(value) if value else None


def _children_of(raw: redis.Redis, fx: Faults) -> Counter[str]:
    """fx-pchild runs per parent (every run hash of the namespace)."""
    tag = f"{{{fx.prefix}}}"
    ids = texts(raw.zrange(f"{tag}:runs:created", 0, -1))
    with raw.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hmget(f"{tag}:run:{rid}", "workflow", "parentRunId")
        rows = pipe.execute()
    return Counter(p.decode() for wf, p in rows if wf == b"fx-pchild" and p)


class ChildKiller:
    """SIGKILLs a random busy child executing a fx-pchild run (never a parent: its
    kills are its plan's) every ``every`` finished children, ``times`` times."""

    def __init__(self, fx: Faults, raw: redis.Redis, sups: list[Any], times: int) -> None:
        self.fx, self.raw, self.sups, self.times = fx, raw, sups, times
        self.parents: set[str] = set()
        self.killed: set[str] = set()
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-childkiller", daemon=True)

    def start(self) -> ChildKiller:
        self._thread.start()
        return self

    def _loop(self) -> None:
        rng = random.Random(7)
        tag = f"{{{self.fx.prefix}}}"
        while self.kills < self.times and not self._stop.wait(rng.uniform(0.3, 1.5)):
            for sup in rng.sample(self.sups, len(self.sups)):
                busy = [(p, r) for p, r in busy_children(sup) if r not in self.parents]
                if not busy:
                    continue
                proc, rid = rng.choice(busy)
                try:
                    wf, data = self.raw.hmget(f"{tag}:run:{rid}", "workflow", "inputJson")
                except redis.RedisError:
                    continue
                # a run killed once at most, and none with a kill of its own: with a
                # parent's worker killed while it claims a child, a run stays under
                # the default max_run_crashes (3)
                if wf != b"fx-pchild" or rid in self.killed or b'"kill"' in (data or b""):
                    continue
                self.killed.add(rid)
                self.fx.fault("kill", [proc.pid], run=rid, where="busy-child")
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.kills += 1
                break

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _check_parents(
    fx: Faults,
    raw: redis.Redis,
    parents: list[str],
    plans: list[dict[str, Any]],
    extra: int = 0,
) -> dict[str, int]:
    """Every parent succeeded once with its outputs in order, had its n children
    exactly, and was killed at each planned point; returns executions per parent."""
    starts = Counter(ev["run"] for ev in _events(fx, "handler-start"))
    oks = Counter(ev["run"] for ev in _events(fx, "handler-end") if ev["outcome"] == "ok")
    kids = _children_of(raw, fx)
    fired = Counter((ev.get("run"), ev.get("where")) for ev in _events(fx, "fault"))
    for rid, plan in zip(parents, plans, strict=True):
        out = _output(raw, fx, rid)
        assert out == list(range(plan["n"])), f"parent {rid}: output {str(out)[:200]}"
        assert oks[rid] == 1, f"parent {rid} returned {oks[rid]} times"
        assert kids[rid] == plan["n"], f"parent {rid}: {kids[rid]} children, not {plan['n']}"
        # the awaited set the pages built (and any abandoned by a kill) is gone: every
        # member was a child that removed itself when it finished
        left = raw.scard(f"{{{fx.prefix}}}:run:{rid}:awaits")
        assert left == 0, f"parent {rid}: {left} members left in its awaits set"
        for point in plan["points"]:
            assert fired[(rid, point)] == 1, f"parent {rid}: kill at {point} fired {fired}"
        # one execution per kill that landed on a process executing it (its planned
        # ones, and others' timed kills: see KILLS), plus ``extra``; then it suspends
        # once and resumes once
        pids = {ev["pid"] for ev in _events(fx, "handler-start") if ev["run"] == rid}
        landed = sum(1 for ev in _events(fx, "fault") if set(ev.get("pids", ())) & pids)
        most = landed + 2 + extra
        assert starts[rid] <= most, f"parent {rid}: {starts[rid]} executions"
    return {rid: starts[rid] for rid in parents}


def test_paged_fanout_with_worker_and_child_kills(fx: Faults) -> None:
    """P1: three parents of 1,050 children each (two pages), two supervisors of
    two children: each parent's worker SIGKILLed at two points of its paged
    registration (between pages, a page in flight, before/while/after the final
    suspend), children SIGKILLing themselves while they finish (and wake the
    parent), and busy children SIGKILLed from outside meanwhile."""
    rng = random.Random(12)
    server = fx.redis()
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=2, modules=PAGED_MODULES, args=KILLS) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    watcher = fx.watch_waits(server.url)
    plans = [_parent_plan(rng, 1050, list(points), 3) for points in P1_POINTS]
    prod = fx.producer(server.url, 0, items=[("fx-pparent", p, None) for p in plans]).start()
    prod.wait(60)
    killer = ChildKiller(fx, raw, sups, 6)
    killer.parents = set(prod.ids)
    killer.start()
    t0 = time.monotonic()
    settled = fx.settle(raw, 60)
    killer.stop()
    report = fx.finish_ok(
        raw,
        "P1. paged fan-out (3 x 1,050 children): parent kills at page points, child kills",
        recovery_s=time.monotonic() - t0,
        note="enqueue -> all finished",
        settled=settled,
    )
    assert watcher.snapshots > 5
    execs = _check_parents(fx, raw, prod.ids, plans)
    self_kills = [ev for ev in _events(fx, "fault") if ev.get("where") == "finish"]
    print(
        f"P1: {report.runs} runs, parent executions {sorted(execs.values())}, "
        f"{len(self_kills)} children killed finishing, {killer.kills} busy children killed"
    )
    assert killer.kills >= 1
    raw.close()


def test_paged_fanout_whole_supervisor_killed_while_registering(fx: Faults) -> None:
    """P1b: the only supervisor's whole group SIGKILLed once the parent's worker
    sends its second page, a new supervisor started: nobody puts the
    parent back but its lease (each page made it run 5 s from then), so the next
    supervisor's reaper takes it once the lease lapsed; it finishes once with
    every output."""
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, modules=PAGED_MODULES)
    sup.wait_workers(2)
    plan: dict[str, Any] = {"n": 1050, "points": []}
    prod = fx.producer(server.url, 0, items=[("fx-pparent", plan, None)]).start()
    prod.wait(30)
    parent = prod.ids[0]
    mark = fx.ledger_dir / f"pcall-{parent}-before-await_children-2"
    wait_for(mark.exists, 120, "the second page sent", 0.002)
    t0 = fx.kill_group(sup)
    sup = fx.supervisor(server.url, procs=2, modules=PAGED_MODULES)
    settled = fx.settle(raw, 60)
    fx.finish_ok(
        raw,
        "P1b. paged fan-out (1,050 children): the whole supervisor SIGKILLed at page 2",
        recovery_s=time.monotonic() - t0,
        note="first kill -> all finished",
        settled=settled,
    )
    _check_parents(fx, raw, [parent], [plan], extra=1)
    raw.close()


def _p3(fx: Faults, fail: str, fail_child: int) -> None:
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=3, modules=PAGED_MODULES)
    sup.wait_workers(3)
    watcher = fx.watch_waits(server.url)
    plan = {"n": 1100, "fail": fail, "fail_child": fail_child}
    prod = fx.producer(server.url, 0, items=[("fx-pparent", plan, None)]).start()
    prod.wait(30)
    parent = prod.ids[0]
    tag = f"{{{fx.prefix}}}"
    wait_for(
        lambda: raw.hget(f"{tag}:run:{parent}", "status") in (b"succeeded", b"failed"),
        60,
        "the parent finished",
        0.05,
    )
    out = _output(raw, fx, parent)
    assert isinstance(out, dict) and "failed" in out, f"the parent's step did not fail: {out}"
    released = [ev for ev in _events(fx, "paged-failed") if ev["run"] == parent]
    assert len(released) == 1
    # woken by the failure, never by a recheck timer: at most one suspension, no
    # timer armed by it, two executions (register; see the failure)
    timers = [ev for ev in _events(fx, "paged-timer") if ev["run"] == parent]
    assert all(ev["timer"] is None for ev in timers), timers
    starts = [ev for ev in _events(fx, "handler-start") if ev["run"] == parent]
    assert len(starts) == 2, f"{len(starts)} executions of the parent"
    fx.settle(raw, 60)
    report = fx.finish(
        raw,
        f"P3. a child fails at {fail} (child {fail_child} of 1,100)",
        recovery_s=None,
        note=f"suspend replies {[ev['reply'] for ev in timers]}",
    )
    report.assert_ok()
    statuses = {k: v for k, v in report.statuses.items() if v}
    bad = "canceled" if fail_child >= 1000 else "failed"
    assert statuses.get(bad) == 1 and statuses.get("succeeded") == 1100, (statuses, report.failures)
    assert watcher.snapshots > 1
    raw.close()


@pytest.mark.parametrize(
    ("fail", "fail_child"),
    [
        ("after:await_children:1", 3),  # registered by page 1: awaitFailed
        ("before:await_children:2", 1020),  # before its page: the page resumes
        ("before:suspend_run", 7),  # between the last page and the decision
        ("after:suspend_run", 5),  # suspended: the failure wakes it
    ],
)
def test_paged_child_fails_while_parent_registers(fx: Faults, fail: str, fail_child: int) -> None:
    """P3: a child of a 1,100-child fan-out fails (or, past the first page where
    it has not started yet, is canceled) while its parent registers its pages:
    the parent's wait step fails on its next execution, woken by the failure
    (no recheck timer, no third execution)."""
    _p3(fx, fail, fail_child)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_paged_fanout_redis_restarts_and_supervisor_term(fx: Faults) -> None:
    """P2: parents of 2,500 children (three pages) enqueued one at a time; once
    one's worker sends its second page, the fault: Redis SIGKILLed and restarted
    from its AOF (``appendfsync always``) down 0.5-6.5 s, or a supervisor TERMed
    (a new one started at once), in turn (``FAULTS_PAGED_PARENTS`` rounds,
    default 5: three restarts, two TERMs); each parent also killed at two points
    of its registration, busy children SIGKILLed meanwhile."""
    rng = random.Random(1212)
    server = fx.redis(*AOF)
    raw = server.client()
    sups = [fx.supervisor(server.url, procs=2, modules=PAGED_MODULES, args=KILLS) for _ in range(2)]
    for sup in sups:
        sup.wait_workers(2)
    n_parents = int(os.environ.get("FAULTS_PAGED_PARENTS", "5"))
    points = [
        ["after:await_children:1", "during:suspend_run"],
        ["during:await_children:2", "before:suspend_run"],
        ["before:await_children:3", "after:suspend_run"],
        ["during:await_children:1", "after:await_children:3"],
    ]
    plans = [_parent_plan(rng, 2500, list(points[i % len(points)]), 4) for i in range(n_parents)]
    killer = ChildKiller(fx, raw, sups, 10).start()
    t0 = time.monotonic()
    parents: list[str] = []
    faults: Counter[str] = Counter()
    for k, plan in enumerate(plans):
        prod = fx.producer(server.url, 0, items=[("fx-pparent", plan, None)]).start()
        prod.wait(120)
        parents += prod.ids
        mark = fx.ledger_dir / f"pcall-{prod.ids[0]}-before-await_children-2"
        wait_for(mark.exists, 300, "the second page sent", 0.005)
        if k % 2 == 1:
            old = sups.pop(0)
            fx.fault("term", [-1], parent=old.pid)
            old.send(signal.SIGTERM)
            sups.append(fx.supervisor(server.url, procs=2, modules=PAGED_MODULES, args=KILLS))
            killer.sups = list(sups)
            assert old.wait(120) == 0, old.log()[-3000:]
            faults["term"] += 1
        else:
            down_for = rng.uniform(0.5, 6.5)
            raw.close()
            fx.fault("redis-kill", seconds=down_for)
            restart_redis(server, down_for)
            raw = killer.raw = server.client()
            faults["redis-restart"] += 1
    settled = fx.settle(raw, 120)
    killer.stop()
    report = fx.finish_ok(
        raw,
        f"P2. paged fan-out ({n_parents} x 2,500 children): Redis AOF restarts, TERMs, kills",
        recovery_s=time.monotonic() - t0,
        note="first parent enqueued -> all finished",
        settled=settled,
    )
    execs = _check_parents(fx, raw, parents, plans)
    self_kills = [ev for ev in _events(fx, "fault") if ev.get("where") == "finish"]
    print(
        f"P2: {report.runs} runs, parent executions {sorted(execs.values())}, faults "
        f"{dict(faults)}, {len(self_kills)} children killed finishing, "
        f"{killer.kills} busy children killed"
    )
    raw.close()
