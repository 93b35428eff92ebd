"""Durable waits given a duration or timeout that is finite but absurd (a
"forever" written as a big number: 1e10, 1e300 seconds) are refused at the call,
before anything is recorded or started, as inf and nan are."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import AsyncContext, Client, Context, Registry, define_workflow
from redflow_mp.step_calls import MAX_STEP_TIMEOUT
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(90)

# Past about 1e305 s a wait's deadline in ms is an infinite float: OverflowError,
# recorded as the step's failure (its replay raised it again, the retries spent)
# after a run_workflow had started its child; up to there a sleep was taken as
# written, a timer centuries past the year 3000 that sleep_until refuses.
ABSURD = (1e306, 1e300, 1e10)
KINDS = ("sleep", "event", "child")


def _call(step: Any, child: Any, kind: str, value: float) -> Any:
    if kind == "sleep":
        return step.sleep("w", value)
    if kind == "event":
        return step.wait_for_event("w", "go", timeout=value)
    return step.run_workflow("w", child, {}, timeout=value)


def _outcome(client: Client, run_id: str) -> str:
    """The run's output, its status once it suspended, or its error once an
    attempt failed (a retry may be scheduled)."""
    done: list[str] = []

    def settled() -> bool:
        state = client.get_run(run_id)
        if state is None:
            return False
        if state.error is None and state.status.value in ("queued", "running", "scheduled"):
            return False
        if state.status.value == "succeeded":
            done.append(str(state.output))
        elif state.error is not None:
            done.append(f"{state.status.value}: {state.error.type}: {state.error.message[:80]}")
        else:
            done.append(state.status.value)
        return True

    try:
        wait_until(settled, timeout=20)
    except AssertionError:
        raise AssertionError(f"run did not settle: {client.get_run(run_id)}") from None
    return done[0]


def test_absurd_wait_durations_are_refused_before_anything_is_recorded(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("bounds-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        return 1

    @define_workflow("bounds-sync", registry=registry, max_concurrency=100)
    def sync_flow(ctx: Context[Any]) -> str:
        try:
            _call(ctx.step, child, ctx.input["kind"], ctx.input["value"])
        except ValueError as exc:
            return f"ValueError: {exc}"
        return "accepted"

    @define_workflow("bounds-async", registry=registry, max_concurrency=100)
    async def async_flow(ctx: AsyncContext[Any]) -> str:
        try:
            await _call(ctx.step, child, ctx.input["kind"], ctx.input["value"])
        except ValueError as exc:
            return f"ValueError: {exc}"
        return "accepted"

    workers.start()
    got: dict[str, str] = {}
    for flow in (sync_flow, async_flow):
        for kind in KINDS:
            for value in ABSURD:
                handle = flow.run({"kind": kind, "value": value})
                out = _outcome(client, handle.id)
                got[f"{flow.name} {kind} {value:g}"] = out.split(":")[0]
                if out.startswith("ValueError"):
                    assert "at most 1e+09" in out, out
                    assert client.get_run_steps(handle.id) == [], f"{kind} {value:g} recorded"
    assert len(got) == 18
    accepted = {k: v for k, v in got.items() if v != "ValueError"}
    assert accepted == {}
    assert client.list_runs(workflow="bounds-child") == [], "a refused wait started a child run"


def test_the_longest_wait_durations_are_still_taken(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("bounds-long", registry=registry)
    def flow(ctx: Context[Any]) -> str:
        ctx.step.sleep("nap", MAX_STEP_TIMEOUT)
        return "woke"

    workers.start()
    handle = flow.run()
    assert _outcome(client, handle.id) == "suspended"
    state = client.get_run(handle.id)
    assert state is not None and state.wait is not None and state.wait.wake_at is not None
    assert state.wait.wake_at >= state.created_at + int(MAX_STEP_TIMEOUT * 1000)
