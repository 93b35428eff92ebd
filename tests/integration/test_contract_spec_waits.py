"""Acceptance checks of issue 12's durable waits (``run_workflow(s)``, ``sleep``,
``sleep_until``, ``wait_for_event``, ``send_event``, status ``suspended``), driven
by the names exactly as spelled there, at default settings (the rest of SPEC:
test_contract_spec.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import pytest
import redis

import redflow_mp
from redflow_mp import (
    Client,
    Context,
    Registry,
    RunFailedError,
    RunStatus,
    StepTimeoutError,
    define_workflow,
)
from tests.helpers import WorkerPool, wait_until

pytestmark = pytest.mark.timeout(90)


class Resize(msgspec.Struct):
    url: str


def test_wait_arguments_refused_clearly(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    errors: list[str] = []

    @define_workflow("bad-waits", registry=registry)
    def bad(ctx: Context[Any]) -> None:
        calls: list[Callable[[], object]] = [
            lambda: ctx.step.sleep("s1", -1),
            lambda: ctx.step.sleep("s2", float("nan")),
            lambda: ctx.step.sleep_until("s3", datetime(2030, 1, 1)),
            lambda: ctx.step.run_workflow("s4", "no-such-workflow", None),
        ]
        for call in calls:
            try:
                call()
            except Exception as exc:
                errors.append(type(exc).__name__)

    workers.start()
    bad.run().result(timeout=30)
    assert len(errors) == 4, errors


def test_handle_send_event_before_the_wait_is_kept(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("early-events", registry=registry)
    def early(ctx: Context[Any]) -> Any:
        return [ctx.step.wait_for_event("one", "e"), ctx.step.wait_for_event("two", "e")]

    h = early.run()
    assert h.send_event("e", 1) is True
    assert h.send_event("e", payload=2) is True
    workers.start()
    assert h.result(timeout=30) == [1, 2]


def test_wait_for_event_timeout_raises_step_timeout(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("impatient", registry=registry)
    def impatient(ctx: Context[Any]) -> str:
        try:
            ctx.step.wait_for_event("w", "never", timeout=0.3)
        except StepTimeoutError:
            return "timed out"
        return "got it"

    workers.start()
    assert impatient.run().result(timeout=30) == "timed out"


def test_run_workflows_failure_names_the_child(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("maybe", registry=registry)
    def maybe(ctx: Context[Any]) -> int:
        if ctx.input == 2:
            raise ValueError("two is bad")
        return int(ctx.input)

    @define_workflow("fan", registry=registry)
    def fan(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflows("all", maybe, [1, 2, 3])
        except RunFailedError as exc:
            return str(exc)
        return "no error"

    workers.start()
    message = fan.run().result(timeout=60)
    assert "two is bad" in message
    kids = {r.id for r in client.list_runs(workflow="maybe")}
    assert any(k in message for k in kids), message


def test_child_wait_timeouts_raise_step_timeout(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("never-done", registry=registry)
    def never(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "never")

    @define_workflow("patient-parent", registry=registry)
    def parent(ctx: Context[Any]) -> list[str]:
        out = []
        try:
            ctx.step.run_workflow("one", never, None, timeout=0.3)
        except StepTimeoutError:
            out.append("one")
        try:
            ctx.step.run_workflows("many", "never-done", [1, 2], timeout=0.3)
        except StepTimeoutError:
            out.append("many")
        return out

    workers.start()
    assert parent.run().result(timeout=60) == ["one", "many"]


def test_a_wait_that_already_holds_does_not_suspend(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    entries: list[int] = []

    @define_workflow("ready-event", registry=registry)
    def ready(ctx: Context[Any]) -> Any:
        entries.append(1)
        ctx.step.sleep("zero", 0)
        return ctx.step.wait_for_event("w", "e")

    h = ready.run()
    assert h.send_event("e", "early") is True
    workers.start()
    assert h.result(timeout=30) == "early"
    assert entries == [1]  # one execution: no suspension, no replay
    st = h.state()
    assert st is not None and st.attempt == 1


def test_suspended_index_and_a_resume_is_not_a_retry(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis, prefix: str
) -> None:
    @define_workflow("sleeper", registry=registry)
    def sleeper(ctx: Context[Any]) -> str:
        ctx.step.wait_for_event("w", "go")
        return "woke"

    workers.start()
    h = sleeper.run()
    wait_until(lambda: (s := h.state()) is not None and s.status is RunStatus.SUSPENDED, timeout=30)
    assert raw.zscore("{" + prefix + "}:runs:status:suspended", h.id) is not None
    h.send_event("go")
    assert h.result(timeout=30) == "woke"
    st = h.state()
    assert st is not None and st.attempt == 1
    assert raw.zscore("{" + prefix + "}:runs:status:suspended", h.id) is None


def test_payload_limits_are_clear_errors(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("big", registry=registry)
    def big(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "e")

    big_input = "x" * (8 * 1024 * 1024 + 1)
    with pytest.raises(redflow_mp.PayloadTooLargeError):
        big.run(big_input)
    h = big.run()
    with pytest.raises(redflow_mp.PayloadTooLargeError):
        h.send_event("e", big_input)
    assert client.get_run_steps(h.id) == []


def test_a_wait_on_a_child_of_its_own_workflow_at_its_limit_fails_clearly(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("recur", registry=registry)  # max_concurrency 1 by default
    def recur(ctx: Context[Any]) -> Any:
        if ctx.input == "child":
            return "leaf"
        try:
            return ctx.step.run_workflow("self", recur, "child")
        except redflow_mp.WaitDeadlockError as exc:
            return f"deadlock: {exc}"

    workers.start()
    out = recur.run("parent").result(timeout=60)
    assert str(out).startswith("deadlock"), out


def test_cancel_of_a_suspended_parent_cascades_to_run_workflow_children_only(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("kid", registry=registry, max_concurrency=5)
    def kid(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "never")

    @define_workflow("dad", registry=registry)
    def dad(ctx: Context[Any]) -> Any:
        ctx.step.emit_workflow("fire", kid, "emitted")
        return ctx.step.run_workflow("wait", kid, "waited")

    workers.start()
    h = dad.run()
    wait_until(
        lambda: (
            len(client.list_runs(workflow="kid", status="suspended")) == 2
            and (s := h.state()) is not None
            and s.status is RunStatus.SUSPENDED
        ),
        timeout=30,
    )
    assert h.cancel() is True
    assert h.state().status is RunStatus.CANCELED  # type: ignore[union-attr]
    kids = {r.input: r for r in client.list_runs(workflow="kid")}
    wait_until(lambda: client.get_run(kids["waited"].id).status is RunStatus.CANCELED, timeout=10)  # type: ignore[union-attr]
    assert client.get_run(kids["emitted"].id).status is RunStatus.SUSPENDED  # type: ignore[union-attr]


def test_async_gather_of_durable_waits_suspends_once(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    import asyncio

    entries: list[int] = []

    @define_workflow("slow-kid", registry=registry, max_concurrency=5)
    def slow_kid(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "go")

    @define_workflow("gatherer", registry=registry)
    async def gatherer(ctx: Any) -> Any:
        entries.append(1)
        return await asyncio.gather(
            *(ctx.step.run_workflow(f"k{i}", slow_kid, i) for i in range(3))
        )

    workers.start()
    h = gatherer.run()
    wait_until(
        lambda: len(client.list_runs(workflow="slow-kid", status="suspended")) == 3, timeout=30
    )
    wait_until(lambda: (s := h.state()) is not None and s.status is RunStatus.SUSPENDED, timeout=30)
    for kid in client.list_runs(workflow="slow-kid"):
        client.send_event(kid.id, "go", kid.input * 10)
    assert h.result(timeout=30) == [0, 10, 20]
    assert len(entries) == 2, entries


def test_max_events_per_run_default_is_ten_thousand_unconsumed(
    client: Client, registry: Registry
) -> None:
    @define_workflow("inbox", registry=registry)
    def inbox(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("w", "e")

    h = inbox.run()
    for i in range(10_000):
        assert client.send_event(h.id, f"e{i % 3}", i) is True
    with pytest.raises(redflow_mp.EventLimitError, match="10000"):
        client.send_event(h.id, "e0", "one too many")
    with pytest.raises(redflow_mp.RedflowError):
        h.send_event("other", None)
