"""Durable waits under the real supervisor, with default settings: a child
awaited by many suspended parents (``run_workflow`` with one shared
``idempotency_key``: its finish notifies a slice of them, the promoter duty's
timer waker the rest, a bounded batch per call; every parent wakes and finishes
once), and a graceful stop (TERM) while runs keep suspending and waking."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunStatus
from tests.process import flows_waits
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

MODULES = ("tests.process.flows_waits",)


def test_a_child_shared_by_600_parents_wakes_each_parent_once(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    n = 600
    handles = [flows_waits.pw_sharer.run("k", client=client) for _ in range(n)]
    wait_until(
        lambda: raw.zcard(client.keys.runs_status("suspended")) == n + 1,
        120,
        0.1,
        message="every parent and the shared child to suspend",
    )
    [gate] = client.list_runs(workflow="pw-gate")
    assert raw.scard(client.keys.run_waiters(gate.id)) == n
    assert client.send_event(gate.id, "open", "opened") is True
    assert [h.result(timeout=120) for h in handles] == ["opened"] * n
    for h in handles:
        assert int(raw.get(f"{tag}:done:{h.id}") or 0) == 1
    assert client.list_runs(status=RunStatus.SUSPENDED) == []
    assert raw.zcard(client.keys.timers) == 0
    assert not raw.exists(client.keys.run_waiters(gate.id))


def test_term_while_runs_suspend_and_wake_drains_quickly_and_loses_nothing(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    tag = client.keys.tag
    sup = supervisor(procs=2, modules=MODULES)
    sup.wait_workers(2)
    # Sleeps of 2-3.8 s: 50 suspended at once takes 17 suspends a second (with
    # 0.1-1 s it took 90, more than a loaded machine's two workers did: never 50).
    handles = [flows_waits.pw_sleeper.run(2 + (i % 10) / 5, client=client) for i in range(300)]
    wait_until(
        lambda: (
            int(raw.get(f"{tag}:exec:max") or 0) > 0
            and raw.zcard(client.keys.runs_status("suspended")) >= 50
        ),
        120,
        0.02,
        message="runs suspending",
    )
    sup.send(signal.SIGTERM)
    sup.wait(25)
    assert sup.proc is not None and sup.proc.returncode == 0, sup.log()[-3000:]
    # each execution is short: the drain did not wait for graceful_timeout (30 s)
    assert "graceful timeout reached" not in sup.log(), sup.log()[-3000:]
    assert raw.zcard(client.keys.leases) == 0  # nothing left held
    again = supervisor(procs=2, modules=MODULES)
    again.wait_workers(2)
    assert all(h.result(timeout=120) == "slept" for h in handles)
    for h in handles:
        assert int(raw.get(f"{tag}:done:{h.id}") or 0) == 1
        state = client.get_run(h.id)
        assert state is not None and state.attempt == 1
    assert raw.zcard(client.keys.runs_status("suspended")) == 0
    assert raw.zcard(client.keys.timers) == 0
