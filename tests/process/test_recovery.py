"""Crash recovery with real processes: SIGKILL mid-step, poison pills, a handler
holding the GIL, and run timeouts enforced by the parent."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from redflow_mp import Client, RunFailedError, RunHandle, RunStatus
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def test_sigkill_mid_step_requeues_at_once_and_never_reruns_a_completed_step(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, args=["--lease-ms", "30000"])
    sup.wait_workers(2)
    tag = client.keys.tag
    handle = flows.multi_step.run(None, client=client)
    victim = int(wait_until(lambda: raw.get(f"{tag}:victim"), 20, message="step two"))
    # step two is in flight: recorded as running, with its start time
    in_flight = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert in_flight["two"].status.value == "running"
    assert in_flight["two"].started_at and in_flight["two"].finished_at is None

    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: raw.hget(client.keys.run(handle.id), "crashCount") == b"1",
        25,
        interval=0.002,
        message="the run to be put back",
    )
    # At once: by the supervisor, on its SIGCHLD (the crash it charged names the
    # signal), not by the reaper once the 30 s lease expired (which charges no crash
    # and records "lease expired"). No wall-clock bound: a few ms on an idle machine,
    # seconds on a loaded one.
    state = client.get_run(handle.id)
    assert state is not None and state.last_crash is not None, state
    assert "SIGKILL" in state.last_crash, state.last_crash

    assert handle.result(timeout=30) == "done"
    assert raw.get(f"{tag}:ledger:one") == b"1"  # completed before the kill: never again
    assert raw.get(f"{tag}:ledger:two") == b"2"  # in flight at the kill: may re-run
    assert raw.get(f"{tag}:ledger:three") == b"1"
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert state.last_crash is not None and "SIGKILL" in state.last_crash
    # the history: the execution the kill ended, then the one that succeeded
    assert [(a.attempt, a.outcome) for a in state.attempts] == [(1, "requeued"), (1, "succeeded")]
    assert state.attempts[0].cause is not None and "SIGKILL" in state.attempts[0].cause
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["one", "two", "three"]
    assert all(s.status.value == "succeeded" for s in steps)
    sup.wait_workers(2)  # the slot was refilled


def test_poison_pill_fails_after_max_run_crashes_and_supervisor_keeps_serving(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    poison = flows.suicide.run(None, client=client)
    others = [flows.pid.run(None, client=client) for _ in range(6)]
    with pytest.raises(RunFailedError) as failed:
        poison.result(timeout=60)
    assert failed.value.error is not None
    assert failed.value.error.type == "RunCrashedError"
    assert "killed its worker process 3 times" in failed.value.error.message
    assert raw.get(f"{client.keys.tag}:ledger:suicide") == b"3"
    _assert_on_failure_ran_once(sup, raw, client, poison.id, "RunCrashedError")
    assert all(isinstance(h.result(timeout=30), int) for h in others)
    assert sup.proc is not None and sup.proc.poll() is None
    assert isinstance(flows.pid.run(None, client=client).result(timeout=30), int)
    sup.wait_workers(2)


def test_a_poison_pill_with_a_new_step_name_each_time_still_fails_at_the_cap(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """A step that succeeds clears the crash count only when the execution got
    past every step that had succeeded before it (a replay): a handler that
    names its step anew at each execution (a timestamp in it), then kills its
    worker, completed a "new" step each time, so its count went back to 0 at
    every execution and it looped for ever (SPEC §5), its steps hash growing."""
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    poison = flows.fickle_pill.run(None, client=client)
    with pytest.raises(RunFailedError) as failed:
        poison.result(timeout=90)
    assert failed.value.error is not None
    assert failed.value.error.type == "RunCrashedError"
    assert "killed its worker process 3 times" in failed.value.error.message
    assert raw.get(f"{client.keys.tag}:ledger:fickle") == b"3"
    assert isinstance(flows.pid.run(None, client=client).result(timeout=30), int)
    sup.wait_workers(2)


def test_a_long_run_killed_once_per_stage_is_no_poison_pill(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """A durable run that lives through many executions (a step and a sleep per
    stage) and whose worker is SIGKILLed once in each of four stages, each time
    after the stage before it completed: not a run that kills its worker in a
    loop. The crash count was the run's lifetime total, so its third kill failed
    it as RunCrashedError (max_run_crashes 3); it now counts the crashes since
    the run last completed a step."""
    sup = supervisor(procs=2)
    sup.wait_workers(2)
    tag = client.keys.tag
    handle = flows.long_haul.run(None, client=client)

    def victim(i: int) -> Any:
        if raw.hget(client.keys.run(handle.id), "status") == b"failed":
            return b"failed"
        return raw.get(f"{tag}:victim-{i}")

    for i in range(4):
        pid = wait_until(partial(victim, i), 30, message=f"stage {i}'s step")
        state = client.get_run(handle.id)
        assert pid != b"failed", (i, state.error if state else None)
        os.kill(int(pid), signal.SIGKILL)
    assert handle.result(timeout=60) == "done"
    assert [raw.get(f"{tag}:ledger:haul-{i}") for i in range(4)] == [b"2"] * 4
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED and state.attempt == 1
    assert state.crash_count == 0  # completed a step since its last crash
    assert state.last_crash is not None and "SIGKILL" in state.last_crash
    assert [a.outcome for a in state.attempts].count("requeued") == 4
    sup.wait_workers(2)


def test_handler_holding_the_gil_for_several_leases_runs_exactly_once(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, args=["--lease-ms", "600", "--reaper-interval-ms", "100"])
    sup.wait_workers(2)

    # The backtracking doubles per extra "a": size it on this machine so the match
    # holds the GIL for about six lease periods (3.6 s), whatever the CPU speed.
    # Measured in CPU time: on a loaded machine a wall-clock probe included the
    # waits for a core, sized the match too small, and it finished in 1.25 s.
    def probe() -> float:
        began = time.thread_time()
        re.match(r"(a+)+$", "a" * 20 + "b")
        return time.thread_time() - began

    per_20 = max(min(probe() for _ in range(3)), 1e-4)  # the least disturbed try
    size = 20 + math.ceil(math.log2(3.6 / per_20))
    started = time.monotonic()
    handle = flows.gil.run(size, client=client)
    assert handle.result(timeout=120) is True
    elapsed = time.monotonic() - started
    assert elapsed > 3 * 0.6, f"the regex finished in {elapsed:.2f} s: not a GIL hold"
    assert raw.get(f"{client.keys.tag}:ledger:gil") == b"1"
    state = client.get_run(handle.id)
    assert state is not None and state.attempt == 1 and state.crash_count == 0


def test_run_timeout_is_enforced_by_the_parent_then_retried_then_failed(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, args=["--kill-grace", "1"])
    sup.wait_workers(2)
    handle = flows.overtime.run(None, client=client)
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=60)
    assert failed.value.error is not None and failed.value.error.type == "RunTimeoutError"
    assert raw.get(f"{client.keys.tag}:ledger:overtime") == b"2"
    state = client.get_run(handle.id)
    assert state is not None and state.attempt == 2
    # both timed-out attempts are in the history, with their error
    assert [(a.attempt, a.outcome) for a in state.attempts] == [(1, "retried"), (2, "failed")]
    assert all(a.error is not None and a.error.type == "RunTimeoutError" for a in state.attempts)
    _assert_on_failure_ran_once(sup, raw, client, handle.id, "RunTimeoutError")
    sup.wait_workers(2)


def _assert_on_failure_ran_once(
    sup: Supervisor, raw: redis.Redis, client: Client, run_id: str, error_type: str
) -> None:
    """The supervisor failed the run itself: on_failure ran once, in a process
    of its own (neither the arbiter nor a worker)."""
    key = f"{client.keys.tag}:on-failure:{run_id}"
    wait_until(lambda: raw.llen(key) >= 1, 20, message="on_failure to run")
    calls = raw.lrange(key, 0, -1)
    assert len(calls) == 1, calls
    first = calls[0]
    kind, pid, value = (first.decode() if isinstance(first, bytes) else first).split(" ", 2)
    assert kind == error_type and value == "None"
    workers = {p.pid for p in sup.workers()}
    assert int(pid) not in workers and int(pid) != sup.pid


def _dying_worker(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path, wf: Any, waiting: str
) -> tuple[Supervisor, RunHandle]:
    """One worker on `tests.process.flows_claimdeath` (lease 30 s); run `wf` and
    wait until its worker has killed itself in that workflow's window."""
    sup = supervisor(
        procs=1,
        modules=("tests.process.flows_claimdeath",),
        args=["--lease-ms", "30000", "--queues", "cd"],
        env={"CLAIM_DEATH_DIR": str(tmp_path)},
    )
    sup.wait_workers(1)
    handle = wf.run(None, client=client)
    wait_until((tmp_path / handle.id).exists, 20, message=waiting)
    return sup, handle


def test_worker_killed_between_claim_reply_and_board_puts_the_run_back_at_once(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, tmp_path: Path
) -> None:
    from tests.process import flows_claimdeath

    sup, handle = _dying_worker(
        supervisor, client, tmp_path, flows_claimdeath.claim_death, "the worker to claim and die"
    )
    # Nothing on the board named this run: only the published claim token finds it.
    # Put back by the supervisor (the crash names the SIGKILL), not by the 30 s
    # lease's expiry (which records "lease expired"): no wall-clock bound.
    assert handle.result(timeout=25) == 1
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert state.last_crash is not None and "SIGKILL" in state.last_crash
    assert state.crash_count == 0  # its handler never started: not a poison-pill strike
    assert raw.get(f"{client.keys.tag}:ledger:{handle.id}") == b"1"
    assert "right after claiming it" in sup.log()


def test_worker_killed_before_its_finish_reaches_redis_puts_the_run_back_at_once(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    from tests.process import flows_claimdeath

    _, handle = _dying_worker(
        supervisor, client, tmp_path, flows_claimdeath.finish_death, "the handler to return"
    )
    # The handler returned but its outcome never reached Redis: the run is still
    # on the board (held until the finish is applied), so it goes back at once.
    assert handle.result(timeout=25) == 2  # at-least-once: the handler ran again
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert state.crash_count == 1 and state.last_crash is not None
    assert "SIGKILL" in state.last_crash


def test_timeout_of_a_run_with_a_name_longer_than_the_board_keeps_its_retries(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The status board clips workflow names (103 bytes); the timeout path must
    decide by the run's full name: retried while attempts remain, on_failure once."""
    assert len(flows.LONG_NAME) == 300
    sup = supervisor(procs=2, args=["--kill-grace", "1"])
    sup.wait_workers(2)
    handle = flows.overtime_long.run(None, client=client)
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=60)
    assert failed.value.error is not None and failed.value.error.type == "RunTimeoutError"
    assert raw.get(f"{client.keys.tag}:ledger:overtime-long") == b"2"
    state = client.get_run(handle.id)
    assert state is not None and state.attempt == 2 and state.workflow == flows.LONG_NAME
    _assert_on_failure_ran_once(sup, raw, client, handle.id, "RunTimeoutError")


def test_run_holding_the_gil_past_its_timeout_runs_once_with_default_settings(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    """Default lease (5 s) and kill_grace (5 s): while the parent waits to SIGKILL
    the stuck child it keeps the run's lease, so no other child starts the same
    attempt; the timeout is then recorded once and the attempt counts."""
    sup = supervisor(procs=2)  # defaults: no lease or kill_grace flags
    sup.wait_workers(2)
    entries = tmp_path / "entries"
    handle = flows.gil_overtime.run(str(entries), client=client)

    def pids() -> list[str]:
        return entries.read_text().split() if entries.exists() else []

    def settled() -> bool:
        state = client.get_run(handle.id)
        return len(pids()) >= 2 or (state is not None and state.status.terminal)

    wait_until(settled, 60, interval=0.05, message="the run to end (or to start twice)")
    assert len(pids()) == 1, f"the handler was entered {len(pids())} times: {pids()}"
    with pytest.raises(RunFailedError) as failed:
        handle.result(timeout=5)
    assert failed.value.error is not None and failed.value.error.type == "RunTimeoutError"
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.FAILED and state.attempt == 1
    assert "lease already lost" not in sup.log()
    sup.wait_workers(2)  # the killed child was replaced
