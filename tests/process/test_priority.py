"""Priorities under the real supervisor: with its one process busy, 1,000 low-priority
runs and then 10 high-priority ones are queued; the high ones run next, in the
order they were enqueued, and then the low ones, oldest first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry
from tests.helpers import texts
from tests.process import flows_priority as flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def test_high_priority_runs_go_before_a_thousand_queued_low_ones(
    supervisor: Callable[..., Supervisor],
    make_client: Callable[..., Client],
    raw: redis.Redis,
) -> None:
    sup = supervisor(procs=1, modules=["tests.process.flows_priority"])
    sup.wait_workers(1)
    # Like another application: no definitions here, the priority of "prio-urgent"
    # comes from the metadata the supervisor synced.
    client = make_client(registry=Registry())
    tag = client.keys.tag
    wait_until(lambda: client.get_workflow_meta("prio-urgent"), message="metadata synced")
    flows.gate.run(None, client=client)
    wait_until(lambda: raw.exists(f"{tag}:gate:started"), 30, message="the gate to start")

    low = [flows.job.run({"tag": f"low-{i}"}, client=client) for i in range(1000)]
    high = [flows.job.run({"tag": f"high-{i}"}, priority=9, client=client) for i in range(5)]
    high += [client.run_by_name("prio-urgent", {"tag": f"high-{i}"}) for i in range(5, 10)]
    assert [h.state().priority for h in high] == [9] * 10  # type: ignore[union-attr]
    assert low[0].state().priority == 0  # type: ignore[union-attr]

    raw.set(f"{tag}:gate:open", 1)
    order_key = f"{tag}:ledger:order"
    wait_until(lambda: raw.llen(order_key) >= 15, 30, message="the first runs after the gate")
    order: list[Any] = texts(raw.lrange(order_key, 0, 14))
    assert order[:10] == [f"high-{i}" for i in range(10)], order
    assert order[10:] == [f"low-{i}" for i in range(5)], order
