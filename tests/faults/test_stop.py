"""Fault 3: SIGSTOP, and a child stuck where no signal reaches it.

- A whole supervisor (parent and children) is stopped for longer than the lease
  while a second one runs: the second takes its runs over, and once the first is
  continued every late write it makes is rejected by fencing.
- A single child is stopped: its parent keeps extending the lease (SPEC §4), so
  the run waits for it until the workflow's timeout stops it; then it is retried.
  Run with a short lease and kill_grace, and with the defaults.
- A child holds the GIL in one C call past its run's timeout (default lease and
  kill_grace): the parent keeps the lease until its SIGKILL lands, so the attempt
  runs once, and its timeout is recorded once.
"""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from typing import Any

import psutil
import pytest

from redflow_mp import create_client
from tests.faults import ledger
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.processes import SHORT, busy_children, running_leases, taken_over
from tests.faults.workload import gil

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

#: The default lease (SPEC §5; the harness starts supervisors with the defaults).
LEASE_S = 5.0


def test_sigstop_whole_supervisor_longer_than_the_lease(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    a = fx.supervisor(server.url, procs=2)
    b = fx.supervisor(server.url, procs=2)
    a.wait_workers(2)
    b.wait_workers(2)
    prod = fx.producer(server.url, 1000, rate=120).start()
    stopped_s: list[float] = []
    recoveries: list[float] = []
    windows: list[tuple[list[int], int, set[str]]] = []
    for _ in range(2):
        busy = wait_for(lambda: busy_children(a), 20, "a busy child in supervisor A")
        pids = fx.group_pids(a)
        t_stop = fx.stop(pids, group=a.pid)
        stranded = running_leases(raw, fx.prefix, [run_id for _, run_id in busy])
        wait_for(partial(taken_over, raw, fx.prefix, stranded), 20, "B to take A's runs over")
        recoveries.append(time.monotonic() - t_stop)

        # Stay stopped a second past the lease (and past B's takeover, which the
        # lease and the reaper's interval bound): every lease A held has expired.
        def past_the_lease(t: float = t_stop) -> bool:
            return time.monotonic() - t >= LEASE_S + 1.0

        wait_for(past_the_lease, 10, "the lease to lapse")
        stopped_s.append(time.monotonic() - t_stop)
        cont = ledger.mono_ns()
        fx.fault("cont", pids)
        os.killpg(a.pid, signal.SIGCONT)
        windows.append((pids, cont, set(stranded)))
        a.wait_workers(2)
    prod.wait(120)
    report = fx.finish(
        raw,
        f"3a. SIGSTOP whole supervisor {max(stopped_s):.0f} s (lease 5 s) x2",
        recovery_s=max(recoveries),
        note="stop -> B holds A's runs (lease 5 s, reaper 0.5 s)",
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


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize(
    ("settings", "args"), [("lease 1 s, kill_grace 0.5 s", SHORT), ("defaults", ())]
)
def test_sigstop_one_child_keeps_its_lease_until_the_run_times_out(
    fx: Faults, settings: str, args: tuple[str, ...]
) -> None:
    server = fx.redis()
    raw = server.client()
    env = {"FAULTS_RUN_TIMEOUT_S": "3"}
    sup = fx.supervisor(server.url, procs=2, env=env, args=args)
    sup.wait_workers(2)
    prod = fx.producer(server.url, 300, rate=60, timeout=3.0).start()

    def slow_child() -> tuple[psutil.Process, str] | None:
        for proc, run_id in busy_children(sup):
            if raw.hget(f"{{{fx.prefix}}}:run:{run_id}", "workflow") == b"fx-slow":
                return proc, run_id
        return None

    proc, run_id = wait_for(slow_child, 30, "a child running fx-slow", 0.005)
    key = f"{{{fx.prefix}}}:run:{run_id}"
    token = running_leases(raw, fx.prefix, [run_id]).get(run_id)
    assert token is not None
    t_stop = fx.stop([proc.pid], run=run_id)
    # As long as the stopped child lives (through the run's timeout, 3 s, and the
    # TERM-to-KILL grace after it), its parent keeps the lease alive.
    while _alive(proc):
        held = (
            running_leases(raw, fx.prefix, [run_id]).get(run_id) == token
            and raw.hget(key, "status") == b"running"
        )
        if not held:
            assert not _alive(proc), "the lease of a stopped, still living child was lost"
            break
        time.sleep(0.05)  # sampling interval of a property that must hold throughout
    assert time.monotonic() - t_stop >= 3.0, "the stopped child was gone before its timeout"
    # Then the run's timeout stopped it (TERM, KILL after kill_grace) and it is retried.
    wait_for(lambda: int(raw.hget(key, "attempt") or 1) >= 2, 20, "the timed-out run's retry")
    recovery = time.monotonic() - t_stop
    wait_for(
        lambda: not any(p.pid == proc.pid for p in sup.workers()), 10, "the stopped child to go"
    )
    sup.wait_workers(2)
    prod.wait(120)
    report = fx.finish(
        raw,
        f"3b. SIGSTOP one child (timeout 3 s; {settings})",
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


def test_child_holding_the_gil_past_its_timeout_with_default_settings(fx: Faults) -> None:
    server = fx.redis()
    raw = server.client()
    sup = fx.supervisor(server.url, procs=2, watch_exits=True)
    sup.wait_workers(2)
    prod = fx.producer(server.url, 300, rate=60).start()
    client = create_client(server.url, prefix=fx.prefix, default=False)
    try:
        t_start = time.monotonic()
        run_id = client.enqueue_workflow(gil, None).id
    finally:
        client.close()
    fx.ledger.append("enqueued", run=run_id, wf=gil.name, key=None)
    key = f"{{{fx.prefix}}}:run:{run_id}"

    def starts() -> list[dict[str, Any]]:
        return [
            ev
            for ev in ledger.read_all(fx.ledger_dir)
            if ev["ev"] == "handler-start" and ev["run"] == run_id
        ]

    def ended_or_repeated() -> bool:
        return raw.hget(key, "status") == b"failed" or len(starts()) > 1

    wait_for(ended_or_repeated, 60, "the GIL-bound run to fail (or to start again)", 0.05)
    recovery = time.monotonic() - t_start
    prod.wait(120)
    report = fx.finish(
        raw,
        "3c. child holds the GIL past its 1 s timeout (defaults)",
        recovery_s=recovery,
        note="enqueue -> timeout recorded",
        settle_timeout=30,
    )
    report.assert_ok()  # I8: never two live executions of one run
    assert len(starts()) == 1, f"the GIL-bound run was executed {len(starts())} times"
    state = raw.hgetall(key)
    assert state[b"attempt"] == b"1" and b"RunTimeoutError" in state[b"errorJson"], state
    assert "lease already lost" not in sup.log()
    assert report.statuses["failed"] == 1, report.statuses
    assert set(report.failures) == {"RunTimeoutError"}, report.failures
    raw.close()
