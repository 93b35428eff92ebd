"""Durable waits under the real supervisor (issue 12): waiting parents free their
processes, ``--procs 1`` never deadlocks, suspended runs survive a SIGKILL of
the whole supervisor, and a child killed while it suspends or resumes loses
nothing and runs nothing twice."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunStatus
from tests.process import flows_waits
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

MODULES = ("tests.process.flows_waits",)


def _count(raw: redis.Redis, key: str) -> int:
    return int(raw.get(key) or 0)


def test_procs_2_many_parents_never_more_than_2_executions(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    tag = client.keys.tag
    handles = [flows_waits.pw_parent.run(i, client=client) for i in range(200)]
    assert [h.result(timeout=180) for h in handles] == [2 * i for i in range(200)]
    assert _count(raw, f"{tag}:exec:max") <= 2
    assert _count(raw, f"{tag}:exec:now") == 0
    # each parent: executed, suspended (or resumed at once), finished its last step once
    for h in handles:
        assert _count(raw, f"{tag}:done:{h.id}") == 1
        assert 1 <= _count(raw, f"{tag}:execs:{h.id}") <= 2
    assert client.list_runs(status=RunStatus.SUSPENDED) == []
    assert raw.zcard(client.keys.timers) == 0


def test_procs_1_parent_and_child_do_not_deadlock(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=1, modules=MODULES)
    sup.wait_workers(1)
    handles = [flows_waits.pw_parent.run(i, client=client) for i in range(5)]
    assert [h.result(timeout=60) for h in handles] == [0, 2, 4, 6, 8]
    assert _count(raw, f"{client.keys.tag}:exec:max") == 1


def test_supervisor_sigkill_with_200_suspended_runs_resumes_each_exactly_once(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    # Sleepers of 15 s: all 200 are suspended at once (with 4 s, a loaded machine
    # took longer to suspend the last ones than the first ones slept, and the 200
    # were never suspended together).
    sleepers = [flows_waits.pw_sleeper.run(15, client=client) for _ in range(100)]
    listeners = [flows_waits.pw_listener.run(None, client=client) for _ in range(100)]
    wait_until(
        lambda: raw.zcard(client.keys.runs_status("suspended")) == 200,
        120,
        message="200 suspended runs",
    )
    assert raw.zcard(client.keys.leases) == 0  # no process holds any of them
    sup.kill_group(signal.SIGKILL)
    sup.wait(10)
    assert raw.zcard(client.keys.runs_status("suspended")) == 200

    again = supervisor(procs=2, modules=MODULES)
    again.wait_workers(2)
    for i, h in enumerate(listeners):
        assert h.send_event("go", {"i": i}) is True
    assert [h.result(timeout=120) for h in listeners] == [{"i": i} for i in range(100)]
    assert all(h.result(timeout=120) == "slept" for h in sleepers)
    for h in sleepers + listeners:
        assert _count(raw, f"{tag}:done:{h.id}") == 1
        assert _count(raw, f"{tag}:execs:{h.id}") == 2  # the first execution, one resume
        steps = client.get_run_steps(h.id)
        assert steps is not None and [s.name for s in steps][-1] == "done"
    assert raw.zcard(client.keys.timers) == 0
    assert raw.zcard(client.keys.runs_status("suspended")) == 0


def test_child_sigkilled_while_suspending_or_resuming_loses_nothing(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES, args=["--max-run-crashes", "20"])
    sup.wait_workers(2)
    handles = [flows_waits.pw_killed.run(delay, client=client) for delay in range(0, 24)]
    assert all(h.result(timeout=180) == "ok" for h in handles)
    killed = 0
    for h in handles:
        kills = _count(raw, f"{tag}:kills:{h.id}")
        # "done" runs once, or twice when the kill caught it in flight (then it may)
        assert 1 <= _count(raw, f"{tag}:done:{h.id}") <= 1 + kills
        steps = client.get_run_steps(h.id)
        assert steps is not None and [s.name for s in steps] == ["nap", "done"]
        state = client.get_run(h.id)
        assert state is not None and state.attempt == 1
        assert raw.get(f"{tag}:killed:{h.id}") is not None  # a kill was set up for each
        killed += kills
    assert killed >= 1  # those that fired before the process moved on to other work
    print(f"kills that fired while suspending/resuming: {killed} of {len(handles)}")
    assert raw.zcard(client.keys.runs_status("suspended")) == 0
    assert raw.zcard(client.keys.leases) == 0
    time.sleep(0.1)
    sup.wait_workers(2)


def test_metrics_show_suspended_runs_and_wakeup_lateness(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    from tests.process.test_observability import _get, _scrape
    from tests.redis_server import free_port

    port = free_port()
    sup = supervisor(procs=2, modules=MODULES, args=["--metrics-port", str(port)])
    sup.wait_workers(2)
    listeners = [flows_waits.pw_listener.run(None, client=client) for _ in range(3)]
    sleepers = [flows_waits.pw_sleeper.run(0.5, client=client) for _ in range(5)]
    wait_until(lambda: _get(_scrape(port), "redflow_runs_suspended") == 3, 30, 0.1)
    assert all(h.result(timeout=30) == "slept" for h in sleepers)
    samples = _scrape(port)
    assert _get(samples, "redflow_wakeup_lateness_seconds_count") == 5
    # woken within a promoter interval (200 ms) and some slack, even on a busy machine
    assert _get(samples, "redflow_wakeup_lateness_seconds_sum") / 5 < 1.0
    wait_until(
        lambda: _get(_scrape(port), "redflow_runs_suspended_total", workflow="pw-listener") == 3,
        15,
        0.1,
        message="the children's suspend counts",
    )
    for h in listeners:
        h.send_event("go", 1)
    assert all(h.result(timeout=30) == 1 for h in listeners)
    wait_until(lambda: _get(_scrape(port), "redflow_runs_suspended") == 0, 30, 0.1)


def test_cpu_fan_out_runs_children_in_parallel_on_procs_2(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """The parent of run_workflows holds no process: its 4 CPU-bound children run two
    at a time (with the inline assist they ran one at a time in the parent's)."""
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    began = time.perf_counter()
    assert flows_waits.pw_fan.run(0.5, client=client).result(timeout=120) == [0, 0, 0, 0]
    wall = time.perf_counter() - began
    assert _count(raw, f"{tag}:exec:max") == 2  # two children at once, never more
    children = client.list_runs(workflow="pw-cpu")
    assert len(children) == 4 and all(c.status is RunStatus.SUCCEEDED for c in children)
    spans = sorted((c.started_at or 0, c.finished_at or 0) for c in children)
    overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlapping >= 1, spans  # some children ran at the same time
    print(f"fan-out 4 x 0.5 s CPU on --procs 2: {wall:.2f} s")


def test_child_process_sigkilled_while_the_awaited_child_finishes(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES, args=["--max-run-crashes", "20"])
    sup.wait_workers(2)
    handles = [flows_waits.pw_awaiter.run(delay % 12, client=client) for delay in range(24)]
    assert [h.result(timeout=180) for h in handles] == [d % 12 for d in range(24)]
    for h in handles:
        assert _count(raw, f"{tag}:done:{h.id}") == 1
        steps = client.get_run_steps(h.id)
        assert steps is not None and [s.name for s in steps] == ["child", "done"]
    children = client.list_runs(workflow="pw-dying-child", limit=100)
    assert len(children) == 24 and all(c.status is RunStatus.SUCCEEDED for c in children)
    fired = sum(_count(raw, f"{tag}:kills:{c.id}") for c in children)
    assert fired >= 1
    print(f"kills that fired around a child's finish: {fired} of {len(children)}")
    assert raw.zcard(client.keys.runs_status("suspended")) == 0
    assert raw.zcard(client.keys.leases) == 0
