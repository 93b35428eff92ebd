"""A step that calls ``sys.exit`` under a real supervisor (default settings)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RunStatus
from tests.process import flows
from tests.process.conftest import Supervisor

pytestmark = pytest.mark.process


@pytest.mark.parametrize("code", [0, 2])
def test_sys_exit_in_a_step_fails_the_step_not_the_worker(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis, code: int
) -> None:
    """SystemExit out of a step function ended the worker process: the run went back
    and ran the step again, once per crash up to max_run_crashes (3 side effects),
    then failed as "killed its worker process 3 times"; with code 0 each child exit
    also counted as clean (no restart backoff). It is the step's error now: the
    step is recorded failed and the handler gets it as an exception."""
    sup = supervisor(procs=1)
    workers = sup.wait_workers(1)
    handle = flows.exits_in_step.run(code, client=client)
    out = handle.result(timeout=60)
    assert out == f"StepExitError: step 'cli' called sys.exit({code})", out
    assert raw.get(f"{client.keys.tag}:ledger:exits") == b"1"
    steps = client.get_run_steps(handle.id)
    assert steps is not None and steps[0].status.value == "failed"
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SUCCEEDED
    assert [p.pid for p in sup.wait_workers(1)] == [p.pid for p in workers]
