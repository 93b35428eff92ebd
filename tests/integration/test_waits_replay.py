"""Durable waits replayed in circumstances that change under them: the
handler's code changed while the run was suspended (a deploy between the
suspension and the wake-up: a wait step's record is used only by a wait of the
same kind), and a canceled parent resumed (the children its cancel canceled
are resumed with it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def _is(client: Client, run_id: str, status: str) -> Callable[[], bool]:
    return lambda: run_status(client, run_id) == status


def test_a_sleep_replaced_by_run_workflow_under_the_same_step_name_starts_the_child(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    version = [1]

    @define_workflow("rp-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return int(ctx.input) + 1

    @define_workflow("rp-parent", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        if version[0] == 1:
            ctx.step.sleep("x", 0.5)
            return "v1"
        return ctx.step.run_workflow("x", child, 41)

    workers.start()
    handle = parent.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    version[0] = 2  # the new code is deployed while the run sleeps
    # Before: IndexError('list index out of range') from the sleep's record read
    # as a children wait with no children; the run failed.
    assert handle.result(timeout=20) == 42


def test_a_run_workflow_replaced_by_a_sleep_under_the_same_step_name_sleeps_its_own_time(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    version = [1]

    @define_workflow("rp-slow", registry=registry)
    def slow(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("never", "never", timeout=3600)
        return 0

    @define_workflow("rp-parent2", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        if version[0] == 1:
            return ctx.step.run_workflow("x", slow, 1, timeout=3600)
        ctx.step.sleep("x", 0.2)
        return "v2"

    workers.start()
    handle = parent.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    version[0] = 2
    kid = client.list_runs(workflow="rp-slow")[0].id
    client.cancel_run(kid)  # wakes the parent, now running the new code
    # Before: the run slept until the old wait's deadline (an hour), not 0.2 s.
    assert handle.result(timeout=20) == "v2"


def test_resuming_a_canceled_parent_resumes_the_children_its_cancel_canceled(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("rp-kid", registry=registry, max_concurrency=4)
    def kid(ctx: Context[Any]) -> int:
        ctx.step.wait_for_event("go", "go")
        return int(ctx.input) * 10

    @define_workflow("rp-other", registry=registry)
    def other(ctx: Context[Any]) -> int:
        return 0

    @define_workflow("rp-fan", registry=registry)
    def fan(ctx: Context[Any]) -> Any:
        emitted = ctx.step.emit_workflow("side", other, {})
        return [emitted, ctx.step.run_workflows("kids", kid, [1, 2])]

    workers.start()
    handle = fan.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    kids = sorted(r.id for r in client.list_runs(workflow="rp-kid"))
    for k in kids:
        wait_until(_is(client, k, "suspended"), timeout=10)
    assert client.cancel_run(handle.id, "by mistake") is True
    wait_until(lambda: {run_status(client, k) for k in kids} == {"canceled"}, timeout=10)
    client.resume_run(handle.id)
    # Before: the resumed parent's children step found the children its own
    # cancel had canceled and failed at once with RunCanceledError.
    wait_until(lambda: {run_status(client, k) for k in kids} == {"suspended"}, timeout=10)
    for k in kids:
        assert client.send_event(k, "go") is True
    emitted, outputs = handle.result(timeout=20)
    assert outputs == [10, 20]
    side = client.get_run(emitted)  # emit_workflow: not canceled, not resumed
    assert side is not None and (side.status.value, side.attempt) == ("succeeded", 1)
    states = [client.get_run(k) for k in kids]
    assert [s.attempt for s in states if s is not None] == [2, 2]  # the same runs, resumed
    assert len(client.list_runs(workflow="rp-kid")) == 2
