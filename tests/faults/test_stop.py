"""Fault 3: SIGSTOP.

- A whole supervisor (parent and children) is stopped for longer than the lease
  while a second one runs: the second takes its runs over, and once the first is
  continued every late write it makes is rejected by fencing.
- A single child is stopped: its parent keeps extending the lease (SPEC §4), so
  the run waits for it until the workflow's timeout stops it; then it is retried.
"""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from typing import Any

import pytest

from tests.faults import ledger
from tests.faults.harness import Faults, busy_children, running_leases, taken_over, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def test_sigstop_whole_supervisor_longer_than_the_lease(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    a = fx.supervisor(server.url, procs=2)
    b = fx.supervisor(server.url, procs=2)
    a.wait_workers(2)
    b.wait_workers(2)
    prod = fx.producer(server.url, 1000, rate=120).start()
    recoveries: list[float] = []
    windows: list[tuple[list[int], int, set[str]]] = []
    for _ in range(2):
        busy = wait_for(lambda: busy_children(a), 20, "a busy child in supervisor A")
        pids = fx.group_pids(a)
        t_stop = fx.fault("stop", pids)
        os.killpg(a.pid, signal.SIGSTOP)
        stranded = running_leases(raw, fx.prefix, [run_id for _, run_id in busy])
        wait_for(partial(taken_over, raw, fx.prefix, stranded), 20, "B to take A's runs over")
        recoveries.append(time.monotonic() - t_stop)

        # Stay stopped for three leases in all: every lease A held is long expired.
        def three_leases(t: float = t_stop) -> bool:
            return time.monotonic() - t >= 3.0

        wait_for(three_leases, 10, "three lease periods")
        cont = ledger.mono_ns()
        fx.fault("cont", pids)
        os.killpg(a.pid, signal.SIGCONT)
        windows.append((pids, cont, set(stranded)))
        a.wait_workers(2)
    prod.wait(120)
    report = fx.finish(
        raw,
        "3a. SIGSTOP whole supervisor 3 s (lease 1 s) x2",
        recovery_s=max(recoveries),
        note="stop -> B holds A's runs",
    )
    # Fencing: after SIGCONT, no write of A for a run it had lost was accepted. A
    # step's write is sent after its step-end; a write whose step-end came after
    # SIGCONT, made by the handler execution that was in flight during the stop
    # (started before SIGCONT), was sent after B took the run over, so it must have
    # been refused. (An acknowledgement read after SIGCONT for a write sent and
    # applied before the stop is not late: Redis applied it while A still held the
    # lease. Nor is a later attempt of the same run that A claims afresh after
    # SIGCONT, e.g. once B's attempt failed and was retried.)
    events = list(ledger.read_all(fx.ledger_dir))
    ends = {ev["exec"]: ev["mono"] for ev in events if ev["ev"] == "step-end" and ev.get("ok")}
    starts = {ev["exec"]: ev["mono"] for ev in events if ev["ev"] == "step-start"}

    def handler_started(ev: dict[str, Any]) -> int:
        """When the handler execution that ran ``ev``'s step started."""
        step_at = starts.get(ev["exec"], ev["mono"])
        return max(
            (
                h["mono"]
                for h in events
                if h["ev"] == "handler-start"
                and h["pid"] == ev["pid"]
                and h["run"] == ev["run"]
                and h["mono"] <= step_at
            ),
            default=0,
        )

    for pids, cont, runs in windows:
        late = [
            ev
            for ev in events
            if ev["ev"] == "step-recorded"
            and ev["pid"] in pids
            and ev["run"] in runs
            and ends.get(ev["exec"], 0) > cont
            and handler_started(ev) < cont
        ]
        assert not late, f"late writes of the stopped supervisor were accepted: {late}"
    assert "lease" in a.log(), "the resumed supervisor never noticed it lost its leases"
    report.assert_ok(all_succeeded=True)
    raw.close()


def test_sigstop_one_child_keeps_its_lease_until_the_run_times_out(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    env = {"FAULTS_RUN_TIMEOUT_S": "3"}
    sup = fx.supervisor(server.url, procs=2, env=env)
    sup.wait_workers(2)
    prod = fx.producer(server.url, 300, rate=60, timeout=3.0).start()

    def slow_child() -> tuple[object, str] | None:
        for proc, run_id in busy_children(sup):
            if raw.hget(f"{{{fx.prefix}}}:run:{run_id}", "workflow") == b"fx-slow":
                return proc, run_id
        return None

    proc, run_id = wait_for(slow_child, 30, "a child running fx-slow", 0.005)
    key = f"{{{fx.prefix}}}:run:{run_id}"
    token = running_leases(raw, fx.prefix, [run_id]).get(run_id)
    assert token is not None
    t_stop = fx.fault("stop", [proc.pid], run=run_id)
    os.kill(proc.pid, signal.SIGSTOP)
    # For two lease periods the parent keeps the stopped child's lease alive.
    while time.monotonic() - t_stop < 2.0:
        assert running_leases(raw, fx.prefix, [run_id]).get(run_id) == token, (
            "the stopped child's lease was not kept"
        )
        assert raw.hget(key, "status") == b"running"
        time.sleep(0.05)  # sampling interval of a property that must hold throughout
    # Then the run's timeout (3 s) stops it (TERM, KILL after kill_grace) and it is retried.
    wait_for(lambda: int(raw.hget(key, "attempt") or 1) >= 2, 20, "the timed-out run's retry")
    recovery = time.monotonic() - t_stop
    wait_for(
        lambda: not any(p.pid == proc.pid for p in sup.workers()), 10, "the stopped child to go"
    )
    sup.wait_workers(2)
    prod.wait(120)
    report = fx.finish(
        raw,
        "3b. SIGSTOP one child (timeout 3 s)",
        recovery_s=recovery,
        note="stop -> retried by the run timeout",
    )
    state = raw.hgetall(key)
    assert state[b"status"] == b"succeeded", state
    assert b"RunTimeoutError" in state.get(b"errorJson", b""), state
    assert "timed out" in sup.log()
    report.assert_ok()
    assert set(report.statuses) <= {"succeeded", "failed"}
    assert set(report.failures) <= {"RunTimeoutError"}, report.failures
    raw.close()
