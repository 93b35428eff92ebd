"""A child awaited by many suspended parents (``run_workflow`` with one shared
``idempotency_key``) under the real supervisor: its finish notifies a slice of
them, the promoter duty's timer waker the rest, a bounded batch per call; every
parent wakes and finishes once."""

from __future__ import annotations

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
