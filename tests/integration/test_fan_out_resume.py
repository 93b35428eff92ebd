"""A failed parent whose ``run_workflows`` step recorded its children by
reference (their outputs add up past ``max_payload_bytes``) and that is resumed
after retention removed those children. Retention kept a child only while its
parent was unfinished; the parent, finished after them, outlives them by that
much, and its resume then failed at the fan-out for good (``child run ... no
longer exists``). A failed or canceled parent can be resumed: retention now
keeps the children it awaited while it is there."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import (
    Client,
    Context,
    NonRetriableError,
    Registry,
    RunFailedError,
    define_workflow,
)
from redflow_mp.waitbase import CHILD_OUTPUTS
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(120)

EACH = 5_000_000  # two outputs of 5 MB: past the default 8 MiB together


def test_a_failed_parent_resumed_after_retention_still_reads_its_children(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    executions: list[int] = []

    @define_workflow("big-part", registry=registry, max_concurrency=4)
    def part(ctx: Context[int]) -> str:
        return str(ctx.input) * EACH

    @define_workflow("big-whole", registry=registry, max_concurrency=2)
    def whole(ctx: Context[Any]) -> list[int]:
        outputs = ctx.step.run_workflows("fan", part, [1, 2])
        ctx.step.sleep("gap", 1.5)  # the parent fails well after its children finished
        executions.append(1)
        if len(executions) == 1:
            raise NonRetriableError("a bug fixed before the resume")
        return [len(o) for o in outputs]

    workers.start()
    handle = whole.run(None)
    with pytest.raises(RunFailedError):
        handle.result(timeout=60)
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["fan"].output == CHILD_OUTPUTS
    kids = [s.id for s in client.list_runs(workflow="big-part")]
    assert len(kids) == 2
    state = client.get_run(handle.id)
    assert state is not None and state.finished_at is not None
    finished = [client.get_run(k).finished_at for k in kids]  # type: ignore[union-attr]
    assert all(f is not None and f < state.finished_at - 1_000 for f in finished)
    # a retention standing for the default 7 days: past the children's, not the
    # parent's (it finished over 1 s after them)
    retention = client.server_time_ms() - max(f or 0 for f in finished) - 1
    while client.scripts.sweep(retention, 100) == 100:
        pass
    assert client.get_run(handle.id) is not None
    assert all(client.get_run(k) is not None for k in kids)  # kept for a resume
    resumed = client.resume_run(handle.id)
    assert resumed.result(timeout=60) == [EACH, EACH]
    assert workers.errors == []


def test_get_run_steps_tells_a_fan_out_by_reference_from_a_step_returning_the_marker(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """get_run_steps showed both as the output "@child-outputs": a user reading
    the steps could not tell the step whose outputs are its children's from a
    step that returned that string. ``StepState.children`` names the children."""

    @define_workflow("big-part", registry=registry, max_concurrency=4)
    def part(ctx: Context[int]) -> str:
        return str(ctx.input) * EACH

    @define_workflow("big-whole", registry=registry, max_concurrency=2)
    def whole(ctx: Context[Any]) -> str:
        outputs = ctx.step.run_workflows("fan", part, [1, 2])
        mimic = ctx.step.run("mimic", lambda: CHILD_OUTPUTS)
        return f"{len(outputs)} {mimic}"

    workers.start()
    handle = whole.run(None)
    assert handle.result(timeout=60) == f"2 {CHILD_OUTPUTS}"
    kids = sorted(s.id for s in client.list_runs(workflow="big-part"))
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["mimic"].output == CHILD_OUTPUTS and steps["mimic"].children is None
    fan = steps["fan"]
    assert fan.children is not None and sorted(fan.children) == kids
    assert workers.errors == []
