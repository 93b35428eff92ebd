"""Cancellation of a CPU-bound running run that never checks ctx.cancelled."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunCanceledError, RunStatus
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until

pytestmark = pytest.mark.process


def test_cancel_of_a_deaf_cpu_bound_run_ends_canceled_after_cancel_grace(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    sup = supervisor(procs=2, args=["--cancel-grace", "1", "--kill-grace", "1"])
    sup.wait_workers(2)
    handle = flows.spin.run(None, client=client)
    wait_until(lambda: raw.get(f"{client.keys.tag}:spin-started"), 20, message="spin start")
    started = time.monotonic()
    assert client.cancel_run(handle.id, reason="operator said so") is True
    with pytest.raises(RunCanceledError) as canceled:
        handle.result(timeout=30)
    latency = time.monotonic() - started
    assert latency < 1 + 4, f"cancel took {latency:.2f} s"
    assert canceled.value.reason == "operator said so"
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.CANCELED
    sup.wait_workers(2)  # slot refilled
    assert isinstance(flows.pid.run(None, client=client).result(timeout=20), int)
