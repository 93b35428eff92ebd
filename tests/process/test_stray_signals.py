"""Signals that are not the supervisor's (SPEC §5 names TERM, INT, QUIT, HUP,
TTIN, TTOU) sent to a running supervisor, to its whole process group (``pkill
-ALRM -f redflow``), or reaching it through a closed pipe: nothing is lost,
nothing runs twice, and nothing stops.

Before, every signal whose default action ends a process (ALRM, VTALRM, PROF,
IO, PWR, STKFLT, XCPU, XFSZ, SYS, TRAP and the real-time signals) ended the
parent by that default action: its children became orphans, finished their run
and left, and the supervisor was down until someone restarted it; sent to a
child mid-run, it killed the child and the run counted a crash.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process

FLOWS = ("tests.process.flows_signals",)

STRAY = [
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGPWR,
    signal.SIGSTKFLT,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    signal.SIGSYS,
    signal.SIGTRAP,
    signal.SIGPIPE,
    signal.SIGRTMIN,
    signal.SIGRTMAX,
]


def _tallies(raw: redis.Redis, client: Client, run_ids: list[str]) -> dict[str, int]:
    tag = client.keys.tag
    return {rid: int(raw.get(f"{tag}:tally:{rid}") or 0) for rid in run_ids}


@pytest.mark.parametrize("sig", STRAY, ids=lambda s: s.name)
def test_a_stray_signal_to_the_supervisor_and_its_group_loses_and_stops_nothing(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, sig: signal.Signals
) -> None:
    sup = supervisor(procs=2, modules=FLOWS)
    before = {p.pid for p in sup.wait_workers(2)}
    busy = client.run_by_name("tally", 1.5)
    started = f"{client.keys.tag}:tally-started"
    wait_until(lambda: raw.sismember(started, busy.id), 20, message="the run's start")
    proc = sup.proc
    assert proc is not None
    sup.send(sig)  # the parent alone
    if sig is not signal.SIGPIPE:  # Python's own SIG_IGN: nothing to log
        wait_until(
            lambda: proc.poll() is not None or f"received {sig.name}; ignored" in sup.log(),
            20,
            message=f"the supervisor to log or die of {sig.name}",
        )
    assert proc.poll() is None, f"{sig.name} ended the supervisor:\n{sup.log()}"
    os.killpg(sup.pid, sig)  # and the whole group: every child too, one of them mid-run
    assert busy.result(timeout=30) in before
    later = [client.run_by_name("tally", 0) for _ in range(4)]
    for handle in later:
        assert handle.result(timeout=30) in before
    assert proc.poll() is None, f"{sig.name} ended the supervisor:\n{sup.log()}"
    assert {p.pid for p in sup.workers()} == before, sup.log()
    ids = [busy.id, *(h.id for h in later)]
    assert _tallies(raw, client, ids) == dict.fromkeys(ids, 1)
    state = client.get_run(busy.id)
    assert state is not None and state.crash_count == 0


@pytest.mark.parametrize("sig", [signal.SIGALRM, signal.SIGPROF], ids=lambda s: s.name)
def test_a_stray_signal_during_start_up_stops_nothing(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path, sig: signal.Signals
) -> None:
    """Sent while the workflow modules import (before the arbiter's handlers)."""
    marker = tmp_path / "importing"
    sup = supervisor(
        procs=2, modules=["tests.process.flows_slowstart"], env={"SLOWSTART_MARKER": str(marker)}
    )
    wait_until(marker.exists, 20, message="the workflow module's import to begin")
    sup.send(sig)
    sup.wait_workers(2, timeout=30)  # raises, with the log, if the supervisor exited
    assert isinstance(client.run_by_name("slowstart", None).result(timeout=30), int)
    proc = sup.proc
    assert proc is not None and proc.poll() is None, f"{sig.name} ended it:\n{sup.log()}"


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT], ids=lambda s: s.name)
def test_a_fault_signal_ends_the_parent_and_every_run_still_runs_once(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, sig: signal.Signals
) -> None:
    """The signals left to their default action (a fault: SEGV, BUS, ILL, FPE,
    ABRT; and KILL) end the parent. Its children, orphans, finish the run they
    hold and leave without claiming another; a supervisor started again runs
    the rest: every run once."""
    first = supervisor(procs=2, modules=FLOWS)
    orphans = first.wait_workers(2)
    hold = f"{client.keys.tag}:hold"
    raw.set(hold, 1)
    handles = [client.run_by_name("held", None) for _ in range(4)]  # two run, two wait
    ids = [h.id for h in handles]
    started = f"{client.keys.tag}:tally-started"
    wait_until(lambda: raw.scard(started) == 2, 20, message="two starts")
    first.send(sig)  # the parent alone
    assert first.wait(timeout=20) == -sig
    raw.delete(hold)  # the orphans' runs may finish now
    for orphan in orphans:
        orphan.wait(timeout=20)  # leaves after its run, claiming nothing more
    second = supervisor(procs=2, modules=FLOWS)
    for handle in handles:
        assert isinstance(handle.result(timeout=60), int), second.log()
    assert _tallies(raw, client, ids) == dict.fromkeys(ids, 1)


def test_a_stray_alrm_during_a_step_with_a_timeout_does_not_time_it_out(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """A step's ``timeout`` arms SIGALRM in a child; a ``pkill -ALRM -f redflow``
    meanwhile is not its deadline (60 s away)."""
    sup = supervisor(procs=2, modules=FLOWS)
    before = {p.pid for p in sup.wait_workers(2)}
    handle = client.run_by_name("timed-step", 2.0)
    started = f"{client.keys.tag}:tally-started"
    wait_until(lambda: raw.sismember(started, handle.id), 20, message="the step's start")
    os.killpg(sup.pid, signal.SIGALRM)
    assert handle.result(timeout=30) in before
    assert raw.get(f"{client.keys.tag}:step:{handle.id}") == b"1"
