"""Batch enqueue under the real supervisor: 2,000 runs enqueued with one
``run_many`` call (four chunks) by a process without the definitions all run,
each exactly once, and end ``succeeded``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, Registry
from tests.helpers import texts
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def test_a_batch_of_two_thousand_drains(
    supervisor: Callable[..., Supervisor],
    make_client: Callable[..., Client],
    raw: redis.Redis,
) -> None:
    sup = supervisor(procs=2, modules=["tests.process.flows_priority"])
    sup.wait_workers(2)
    client = make_client(registry=Registry())
    tag = client.keys.tag
    wait_until(lambda: client.get_workflow_meta("prio-job"), message="metadata synced")
    handles = client.run_many_by_name("prio-job", [{"tag": f"b-{i}"} for i in range(2000)])
    assert len({h.id for h in handles}) == 2000
    order_key = f"{tag}:ledger:order"
    done = client.keys.runs_status("succeeded")
    wait_until(lambda: raw.zcard(done) == 2000, 60, message="2,000 runs to succeed")
    ran = texts(raw.lrange(order_key, 0, -1))
    assert sorted(ran) == sorted(f"b-{i}" for i in range(2000))  # each once
    assert raw.zcard(client.keys.runs_status("queued")) == 0
    assert {h.state().status for h in handles[::97]} == {"succeeded"}  # type: ignore[union-attr]
