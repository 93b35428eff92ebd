"""Bursts of the supervisor's own signals (an operator's loop, a confused
autoscaler, a ``systemctl reload`` retried in a hurry) and stop signals that
overlap: each ends in a sane state, with every run executed once.

- 50 HUPs, each sent as soon as the one before was received (rolling restarts
  overlapping), runs in flight: the runs finish once each, the children settle
  at ``procs``, new runs are served.
- TTIN and TTOU storms: the children follow the target, down to one.
- TERM, INT and QUIT in a burst during start-up: one clean stop.
- INT, QUIT or TERM sent to the whole group (Ctrl-C, Ctrl-\\, ``pkill -f``): no
  run is charged a crash, each runs once.
- A second TERM, or an INT, during a graceful drain: a fast stop, the runs in
  flight put back without a crash counted, all finished once after a restart.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from redflow_mp import Client
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process

FLOWS = ("tests.process.flows_signals",)


def _tallies(raw: redis.Redis, client: Client, run_ids: list[str]) -> dict[str, int]:
    tag = client.keys.tag
    return {rid: int(raw.get(f"{tag}:tally:{rid}") or 0) for rid in run_ids}


def _started(raw: redis.Redis, client: Client, run_id: str) -> bool:
    return bool(raw.sismember(f"{client.keys.tag}:tally-started", run_id))


def _storm(sup: Supervisor, sig: signal.Signals, n: int) -> None:
    """``n`` signals, each sent as soon as the supervisor logged the one before:
    sent faster, the kernel merges them (one pending instance per signal)."""
    said = f"received {sig.name}"
    for _ in range(n):
        seen = sup.log().count(said)
        sup.send(sig)
        wait_until(lambda seen=seen: sup.log().count(said) > seen, 20, message=said)  # type: ignore[misc]


def test_fifty_hups_in_a_row_leave_every_run_done_once_and_every_child_replaced(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=FLOWS)
    sup.wait_workers(2)
    handles = [client.run_by_name("tally", 1.0) for _ in range(4)]
    wait_until(lambda: _started(raw, client, handles[0].id), 20, message="a run's start")
    _storm(sup, signal.SIGHUP, 49)
    old = {p.pid for p in psutil.Process(sup.pid).children()}  # all of generation <= 49
    _storm(sup, signal.SIGHUP, 1)
    for handle in handles:
        assert isinstance(handle.result(timeout=60), int), sup.log()
    later = [client.run_by_name("tally", 0) for _ in range(4)]
    for handle in later:
        assert isinstance(handle.result(timeout=60), int), sup.log()
    ids = [h.id for h in (*handles, *later)]
    assert _tallies(raw, client, ids) == dict.fromkeys(ids, 1)
    for handle in handles:
        state = client.get_run(handle.id)
        assert state is not None and state.crash_count == 0, sup.log()
    assert sup.proc is not None and sup.proc.poll() is None, sup.log()
    # The rolling restart of the last HUP replaces every child of before it.
    wait_until(lambda: not old & {p.pid for p in sup.workers()}, 60, message="the last restart")
    sup.wait_workers(2, timeout=60)
    assert "Traceback" not in sup.log(), sup.log()
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=60) == 0, sup.log()


def test_ttin_and_ttou_storms_leave_the_children_at_the_target(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=FLOWS)
    sup.wait_workers(2)
    handles = [client.run_by_name("tally", 0.5) for _ in range(6)]
    _storm(sup, signal.SIGTTIN, 20)  # 22 children
    _storm(sup, signal.SIGTTOU, 10)  # 12
    _storm(sup, signal.SIGTTIN, 5)  # 17
    for handle in handles:
        assert isinstance(handle.result(timeout=60), int), sup.log()
    sup.wait_workers(17, timeout=60)
    _storm(sup, signal.SIGTTOU, 20)  # down to the minimum, and past it
    assert "TTOU ignored: one child is the minimum" in sup.log(), sup.log()
    sup.wait_workers(1, timeout=60)
    later = [client.run_by_name("tally", 0) for _ in range(3)]
    for handle in later:
        assert isinstance(handle.result(timeout=60), int), sup.log()
    ids = [h.id for h in (*handles, *later)]
    assert _tallies(raw, client, ids) == dict.fromkeys(ids, 1)
    assert sup.proc is not None and sup.proc.poll() is None, sup.log()
    assert "Traceback" not in sup.log(), sup.log()


@pytest.mark.parametrize(
    "second", [signal.SIGTERM, signal.SIGINT], ids=["term-during-drain", "int-during-drain"]
)
def test_a_stop_during_a_drain_puts_the_runs_back_and_a_restart_runs_each_once(
    supervisor: Callable[..., Supervisor],
    client: Client,
    raw: redis.Redis,
    second: signal.Signals,
) -> None:
    sup = supervisor(procs=2, modules=FLOWS)
    sup.wait_workers(2)
    raw.set(f"{client.keys.tag}:hold", 1)
    handles = [client.run_by_name("held", None) for _ in range(3)]  # two run, one waits
    ids = [h.id for h in handles]
    wait_until(lambda: sum(_started(raw, client, i) for i in ids) == 2, 20, message="two starts")
    sup.send(signal.SIGTERM)
    # Awaited: a second TERM sent before the first was delivered is merged into
    # it by the kernel (one pending instance per standard signal), a drain then.
    wait_until(lambda: "draining" in sup.log(), 20, message="the drain")
    sup.send(second)
    assert sup.wait(timeout=20) == 0, sup.log()
    for handle in handles:
        state = client.get_run(handle.id)
        assert state is not None and state.status == "queued", (state, sup.log())
        assert state.crash_count == 0
    before = _tallies(raw, client, ids)
    assert sorted(before.values()) == [0, 1, 1]
    raw.delete(f"{client.keys.tag}:hold")
    again = supervisor(procs=2, modules=FLOWS)
    for handle in handles:
        assert isinstance(handle.result(timeout=60), int), again.log()
    assert _tallies(raw, client, ids) == {i: n + 1 for i, n in before.items()}


@pytest.mark.parametrize(
    "burst",
    [
        (signal.SIGTERM,) * 20,
        (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) * 7,
        (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTERM) * 5,
    ],
    ids=["term-x20", "term-int-quit-x7", "hup-ttin-ttou-term-x5"],
)
def test_a_burst_of_stops_during_start_up_stops_it_cleanly_once(
    supervisor: Callable[..., Supervisor], tmp_path: Path, burst: tuple[signal.Signals, ...]
) -> None:
    """TERM, INT, QUIT repeated while the workflow modules import (an operator's
    Ctrl-C held down, a ``kill`` loop): one clean stop, exit status 0."""
    marker = tmp_path / "importing"
    sup = supervisor(
        procs=2, modules=["tests.process.flows_slowstart"], env={"SLOWSTART_MARKER": str(marker)}
    )
    wait_until(marker.exists, 20, message="the workflow module's import to begin")
    for sig in burst:
        os.kill(sup.pid, sig)
    code = sup.wait(timeout=20)
    log = sup.log()
    assert code == 0, f"exit status {code}:\n{log}"
    assert "Traceback" not in log, log
    assert log.count("during start-up; stopped") == 1, log
    assert not sup.workers()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT, signal.SIGTERM], ids=str)
def test_a_stop_sent_to_the_whole_group_charges_no_run(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, sig: signal.Signals
) -> None:
    """Ctrl-C or Ctrl-\\ in the supervisor's terminal (or ``pkill -f redflow``)
    signals the parent and every child at once: the runs in flight go back (or,
    for TERM, finish) without a crash charged, and each runs once."""
    sup = supervisor(procs=2, modules=FLOWS)
    sup.wait_workers(2)
    hold = f"{client.keys.tag}:hold"
    raw.set(hold, 1)
    handles = [client.run_by_name("held", None) for _ in range(3)]
    ids = [h.id for h in handles]
    wait_until(lambda: sum(_started(raw, client, i) for i in ids) == 2, 20, message="two starts")
    if sig is signal.SIGTERM:
        raw.delete(hold)  # a drain lets them finish
    os.killpg(sup.pid, sig)
    assert sup.wait(timeout=30) == 0, sup.log()
    for run_id in ids:
        state = client.get_run(run_id)
        assert state is not None and state.crash_count == 0, (state, sup.log())
    raw.delete(hold)
    supervisor(procs=2, modules=FLOWS)
    for handle in handles:
        assert isinstance(handle.result(timeout=60), int)
    tallies = _tallies(raw, client, ids)
    assert all(n in (1, 2) for n in tallies.values()), tallies
    assert sum(tallies.values()) == (3 if sig is signal.SIGTERM else 5), tallies


def test_a_quit_to_the_whole_group_while_the_parent_is_busy_charges_no_run(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, tmp_path: Path
) -> None:
    """Ctrl-\\ reaches the whole group while the parent is busy outside its loop
    (here a reload importing a slow module; under load, any moment it is not
    scheduled): the children leave at once, and the parent, back in its loop,
    reaped their exits before it read the QUIT that came first. Each run in
    flight was charged a crash ("worker exited with code 5"), and a run at its
    last attempt would have failed for an operator's stop."""
    gate = tmp_path / "gate"
    sup = supervisor(
        procs=2,
        modules=[*FLOWS, "tests.process.flows_slow_reload"],
        env={"SLOW_RELOAD": str(gate)},
    )
    children = sup.wait_workers(2)
    raw.set(f"{client.keys.tag}:hold", 1)
    ids = [client.run_by_name("held", None).id for _ in range(2)]
    wait_until(lambda: all(_started(raw, client, i) for i in ids), 20, message="two starts")
    gate.touch()
    sup.send(signal.SIGHUP)
    wait_until(Path(f"{gate}.entered").exists, 20, message="the reload's slow import")
    os.killpg(sup.pid, signal.SIGQUIT)
    wait_until(
        lambda: all(p.status() == psutil.STATUS_ZOMBIE for p in children),
        20,
        message="the children's exits",
    )
    gate.unlink()  # the reload ends; the loop reaps the children, then reads the QUIT
    assert sup.wait(timeout=30) == 0, sup.log()
    for run_id in ids:
        state = client.get_run(run_id)
        assert state is not None, run_id
        assert (state.status, state.crash_count) == ("queued", 0), (state, sup.log())


def test_a_replacement_still_booting_when_a_drain_starts_is_no_start_failure(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """HUP, then TERM while the new child boots: it leaves without ever being
    ready, as asked. That was counted a failed start of its slot, with a
    ``worker 1 restarts in 1.0 s`` warning during the drain (nothing restarts)."""
    gate = tmp_path / "gate"
    sup = supervisor(procs=1, modules=["tests.process.flows_gate"], env={"GATE": str(gate)})
    first = {p.pid for p in sup.wait_workers(1)}
    assert client.run_by_name("gated", None).result(timeout=30) in first  # ready
    gate.touch()  # the next child holds its start
    sup.send(signal.SIGHUP)
    sup.wait_workers(2)  # the current child and its replacement, booting
    sup.send(signal.SIGTERM)
    wait_until(lambda: "draining" in sup.log(), 20, message="the drain")
    gate.unlink()
    assert sup.wait(timeout=30) == 0, sup.log()
    assert "restarts in" not in sup.log(), sup.log()
