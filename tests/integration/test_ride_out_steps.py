"""A child start that outlasts the ride-out of Redis trouble (``Execution.durable``)
inside a step that starts children puts the run back, its attempt not spent
(the executor's DEFER), and records nothing for the step: the replay starts the
child (deduplicated by the step's key) and goes on. It recorded the trouble as
the step's failure, so the replay raised it and the run failed: seen in the
Sentinel failover test under durability "wait", as ``RunFailedError: no replica
... confirmed the write within 1000 ms``."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.runs import Runs
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("how", ["run_workflow", "emit_workflow"])
def test_a_child_start_that_outlasts_the_ride_out_is_not_the_steps_failure(
    client: Client,
    registry: Registry,
    workers: WorkerPool,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    @define_workflow("ride-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return 7

    @define_workflow("ride-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        if how == "run_workflow":
            return ctx.step.run_workflow("c", child, None)
        return len(ctx.step.emit_workflow("c", child, None)) > 0

    # The child's start meets Redis trouble for longer than the ride-out (15 s
    # with the default 5 s lease): every other write of the run goes through.
    real = Runs.enqueue
    calls: list[float] = []
    trouble_until: list[float] = []

    def enqueue(self: Runs, workflow: Any, input: Any, options: Any) -> str:
        name = workflow if isinstance(workflow, str) else workflow.name
        if name == "ride-child":
            now = time.monotonic()
            if not trouble_until:
                trouble_until.append(now + 16.0)
            calls.append(now)
            if now < trouble_until[0]:
                raise redis.exceptions.ConnectionError("injected: Redis unreachable")
        return real(self, workflow, input, options)

    monkeypatch.setattr(Runs, "enqueue", enqueue)
    workers.start()
    handle = parent.run()
    expected = 7 if how == "run_workflow" else True
    assert handle.result(timeout=60) == expected
    state = client.get_run(handle.id)
    assert state is not None and state.attempt == 1  # put back, not charged
    assert calls[-1] >= trouble_until[0]  # the child was started after the trouble
