"""Durable waits (issue 12): run_workflow / run_workflows / sleep / sleep_until /
wait_for_event suspend the run (no process held) and resume it by replay."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from redflow_mp import (
    AsyncContext,
    Client,
    Context,
    Registry,
    RunCanceledError,
    RunFailedError,
    StepTimeoutError,
    define_workflow,
)
from redflow_mp.codec import RunStatus, RunWait
from redflow_mp.errors import PayloadTooLargeError, UnknownWorkflowError, WaitDeadlockError
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.wait_scripts import EventLimitError
from tests.helpers import WorkerPool, run_status, wait_until

pytestmark = pytest.mark.timeout(60)


def test_parent_suspends_frees_its_worker_and_resumes_by_replay(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    gate = threading.Event()
    before: list[int] = []

    @define_workflow("w-child", registry=registry)
    def child(ctx: Context[Any]) -> int:
        gate.wait(20)
        return int(ctx.input) * 2

    @define_workflow("w-parent", registry=registry)
    def parent(ctx: Context[Any]) -> dict[str, Any]:
        def once() -> int:
            before.append(1)
            return len(before)

        first = ctx.step.run("first", once)
        got = ctx.step.run_workflow("child", child, 21)
        return {"first": first, "got": got, "attempt": ctx.run.attempt}

    workers.start()  # one worker: the parent must free it for the child
    handle = parent.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    state = client.get_run(handle.id)
    assert state is not None and state.wait is not None
    assert state.wait.kinds == ["children"] and len(state.wait.children) == 1
    # the suspended run holds no lease, keeps its slot, is indexed
    assert raw.zscore(client.keys.leases, handle.id) is None
    assert raw.sismember(client.keys.wf_running("w-parent"), handle.id)
    assert client.list_runs(status=RunStatus.SUSPENDED)[0].id == handle.id
    gate.set()
    assert handle.result(timeout=20) == {"first": 1, "got": 42, "attempt": 1}
    assert before == [1]  # the step before the wait ran once
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["first", "child"]
    assert steps[1].status.value == "succeeded" and steps[1].output == 42
    assert not raw.exists(client.keys.run_awaits(handle.id))
    assert not raw.sismember(client.keys.wf_running("w-parent"), handle.id)


def test_run_workflows_outputs_in_order_and_a_failed_child_fails_the_step(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("fan-child", registry=registry, max_concurrency=8)
    def child(ctx: Context[Any]) -> int:
        if ctx.input == "bad":
            raise ValueError("child broke")
        time.sleep(0.01 * (5 - int(ctx.input)))
        return int(ctx.input) * 10

    @define_workflow("fan-parent", registry=registry, max_concurrency=4)
    def parent(ctx: Context[Any]) -> Any:
        try:
            return ctx.step.run_workflows("all", child, ctx.input)
        except RunFailedError as exc:
            return {"failed": str(exc)}

    workers.start()
    workers.start()
    assert parent.run([0, 1, 2, 3, 4]).result(timeout=30) == [0, 10, 20, 30, 40]
    out = parent.run([1, "bad", 2]).result(timeout=30)
    assert "failed" in out and "child broke" in out["failed"]
    bad = [r for r in client.list_runs(workflow="fan-child") if r.status.value == "failed"]
    assert len(bad) == 1 and bad[0].id in out["failed"]
    # empty fan-out returns at once
    assert parent.run([]).result(timeout=10) == []


def test_sleep_suspends_and_wakes_near_its_time(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    calls: list[float] = []

    @define_workflow("sleeper", registry=registry)
    def sleeper(ctx: Context[Any]) -> float:
        calls.append(time.time())
        ctx.step.sleep("nap", 1.0)
        ctx.step.sleep_until("past", datetime.now(UTC) - timedelta(seconds=5))
        return ctx.step.run("after", time.time)

    workers.start()
    begun = time.time()
    handle = sleeper.run()
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    state = client.get_run(handle.id)
    assert state is not None and state.wait is not None and state.wait.wake_at is not None
    woke = handle.result(timeout=20)
    assert 1.0 <= woke - begun < 3.0
    assert len(calls) == 2  # first execution, one resume
    steps = client.get_run_steps(handle.id)
    assert steps is not None and [s.name for s in steps] == ["nap", "past", "after"]


def test_sleep_bad_input_is_a_clear_error(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    seen: list[str] = []

    @define_workflow("bad-sleeps", registry=registry)
    def bad(ctx: Context[Any]) -> list[str]:
        for i, value in enumerate([-1, math.nan, math.inf, "5", True]):
            try:
                ctx.step.sleep(f"s{i}", value)  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                seen.append(type(exc).__name__)
        try:
            ctx.step.sleep_until("naive", datetime.now() + timedelta(seconds=1))
        except ValueError as exc:
            seen.append("naive:" + str(exc)[:30])
        return seen

    workers.start()
    out = bad.run().result(timeout=10)
    assert out[:5] == ["ValueError", "ValueError", "ValueError", "TypeError", "TypeError"]
    assert out[5].startswith("naive:sleep_until got a naive")
    assert client.get_run_steps(bad.run().id) is not None


def test_events_sent_before_the_wait_are_kept_in_order(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("ev-order", registry=registry)
    def flow(ctx: Context[Any]) -> list[Any]:
        ctx.step.sleep("let-events-in", 0.5)
        a = ctx.step.wait_for_event("a", "go")
        b = ctx.step.wait_for_event("b", "go")
        c = ctx.step.wait_for_event("c", "go")
        return [a, b, c]

    workers.start()
    handle = flow.run()
    assert handle.send_event("go", {"n": 1}) is True
    assert client.send_event(handle.id, "go", [2]) is True
    wait_until(lambda: run_status(client, handle.id) == "suspended", timeout=10)
    state = client.get_run(handle.id)
    assert state is not None
    wait_until(
        lambda: (
            (s := client.get_run(handle.id)) is not None
            and s.wait is not None
            and s.wait.events == ["go"]
        ),
        timeout=10,
    )
    assert handle.send_event("go", "three") is True
    assert handle.result(timeout=10) == [{"n": 1}, [2], "three"]
    # finished: nothing stored any more
    assert handle.send_event("go", 4) is False
    assert client.send_event("no-such-run-id", "go") is False


def test_wait_for_event_timeout_is_durable_and_replayed(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    executions: list[int] = []

    @define_workflow("ev-timeout", registry=registry)
    def flow(ctx: Context[Any]) -> Any:
        executions.append(1)
        try:
            ctx.step.wait_for_event("w", "never", timeout=0.5)
        except StepTimeoutError as exc:
            timed_out = str(exc)
        ctx.step.sleep("then", 0.3)  # a second suspension: the timeout replays
        return timed_out

    workers.start()
    out = flow.run().result(timeout=20)
    assert "timed out" in out and "never" in out
    assert len(executions) == 3  # first, woken by the deadline, woken by the sleep


def test_event_bad_input(client: Client, registry: Registry, make_client: Any) -> None:
    @define_workflow("ev-bad", registry=registry)
    def flow(ctx: Context[Any]) -> None:
        return None

    handle = flow.run()  # queued (no worker): events may be sent
    with pytest.raises(ValueError, match="event name"):
        client.send_event(handle.id, "")
    with pytest.raises(TypeError):
        client.send_event(handle.id, 5)  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLargeError):
        client.send_event(handle.id, "big", "x" * (client.max_payload_bytes + 1))
    with pytest.raises(TypeError, match="not JSON-encodable"):
        client.send_event(handle.id, "obj", object())
    small = make_client(max_events_per_run=3)
    for i in range(3):
        assert small.send_event(handle.id, "flood", i) is True
    with pytest.raises(EventLimitError, match="max_events_per_run=3"):
        small.send_event(handle.id, "flood", 3)
    assert client.redis.llen(client.keys.run_events(handle.id, "flood")) == 3
    assert not client.redis.exists(client.keys.run_events(handle.id, "big"))
    # hostile names are stored under their length-prefixed key, safely
    hostile = "a:b}{x\n*"
    assert client.send_event(handle.id, hostile, 1) is True
    assert client.redis.llen(client.keys.run_events(handle.id, hostile)) == 1


def test_events_of_one_run_have_a_byte_budget_by_default(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """The count limit (10,000) let one run store 10,000 payloads of up to
    max_payload_bytes (8 MiB): 80 GB of Redis memory through send_event. By
    default the unconsumed events of a run hold at most 64 MiB; a refused event
    stores nothing (nothing stored is dropped)."""

    @define_workflow("ev-budget", registry=registry)
    def flow(ctx: Context[Any]) -> None:
        return None

    handle = flow.run()  # queued (no worker): events may be sent
    mib = "x" * (1024 * 1024 - 2)  # one MiB of JSON with its quotes
    sent = 0
    with pytest.raises(EventLimitError, match="max_event_bytes_per_run=67108864"):
        while sent < 100:
            client.send_event(handle.id, "flood", mib)
            sent += 1
    assert sent == 64
    assert raw.llen(client.keys.run_events(handle.id, "flood")) == 64
    with pytest.raises(EventLimitError):  # the budget is full: even one byte more
        client.send_event(handle.id, "small", 1)


def test_cancel_of_a_suspended_parent_cascades_to_its_children(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    @define_workflow("cc-grandchild", registry=registry)
    def grandchild(ctx: Context[Any]) -> None:
        ctx.step.wait_for_event("forever", "never")

    @define_workflow("cc-child", registry=registry)
    def child(ctx: Context[Any]) -> None:
        ctx.step.run_workflow("gc", grandchild, None)

    @define_workflow("cc-emitted", registry=registry)
    def emitted(ctx: Context[Any]) -> None:
        ctx.step.wait_for_event("forever", "never")

    @define_workflow("cc-parent", registry=registry)
    def parent(ctx: Context[Any]) -> None:
        ctx.step.emit_workflow("emit", emitted, None)
        ctx.step.run_workflow("child", child, None)

    workers.start()
    handle = parent.run()
    wait_until(
        lambda: len(client.list_runs(status=RunStatus.SUSPENDED)) == 4,
        timeout=15,
    )
    assert handle.cancel("stop") is True
    with pytest.raises(RunCanceledError):
        handle.result(timeout=5)
    assert [r.status.value for r in client.list_runs(workflow="cc-child")] == ["canceled"]
    assert [r.status.value for r in client.list_runs(workflow="cc-grandchild")] == ["canceled"]
    assert [r.status.value for r in client.list_runs(workflow="cc-emitted")] == ["suspended"]
    assert raw.zcard(client.keys.timers) == 0
    assert raw.scard(client.keys.wf_running("cc-parent")) == 0
    assert raw.scard(client.keys.wf_running("cc-child")) == 0


def test_async_gather_of_waits_suspends_once(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    executions: list[int] = []

    @define_workflow("ag-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        time.sleep(0.05)
        return int(ctx.input) + 100

    @define_workflow("ag-parent", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> list[Any]:
        executions.append(1)
        calls = [ctx.step.run_workflow(f"c{i}", child, i) for i in range(4)]
        return list(await asyncio.gather(*calls, ctx.step.sleep("nap", 0.2)))

    workers.start()
    workers.start()
    out = parent.run().result(timeout=30)
    assert out == [100, 101, 102, 103, None]
    # one suspension on all five waits (woken when the children are done or the
    # nap ends, whichever is later needs a second one at most)
    assert len(executions) <= 3


def test_wait_on_unknown_workflow_and_deadlock_are_clear_errors(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("dl-self", registry=registry, max_concurrency=1)
    def selfish(ctx: Context[Any]) -> Any:
        if ctx.input == "child":
            return "never runs"
        try:
            ctx.step.run_workflow("me", selfish, "child")
        except WaitDeadlockError as exc:
            return "deadlock: " + str(exc)
        return "no deadlock"

    @define_workflow("unknown-wait", registry=registry)
    def unknown(ctx: Context[Any]) -> Any:
        try:
            ctx.step.run_workflow("x", "no-such-workflow", None)
        except UnknownWorkflowError as exc:
            return str(exc)
        return "started"

    workers.start()
    out = selfish.run("parent").result(timeout=15)
    assert out.startswith("deadlock: ") and "max_concurrency" in out
    text = unknown.run().result(timeout=15)
    assert "no-such-workflow" in text and "nothing was started" in text
    assert client.list_runs(workflow="no-such-workflow") == []


def test_run_workflow_timeout_is_durable(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    gate = threading.Event()

    @define_workflow("slow-child", registry=registry, queue="slow")
    def child(ctx: Context[Any]) -> None:
        gate.wait(20)

    @define_workflow("impatient", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflow("c", child, None, timeout=0.5)
        except StepTimeoutError as exc:
            return str(exc)
        return "done"

    workers.start(queues=["default"])  # nobody serves "slow": the child stays queued
    out = parent.run().result(timeout=15)
    assert "timed out" in out
    gate.set()


def test_a_resume_after_100_steps_reads_the_steps_once(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    from redflow_mp import Worker
    from redflow_mp.maintenance import wake_due
    from tests.helpers import command_counts

    ran: list[int] = []

    @define_workflow("hundred", registry=registry)
    def hundred(ctx: Context[Any]) -> int:
        def record(i: int) -> int:
            ran.append(i)
            return i

        total = sum(ctx.step.run(f"s{i}", record, i) for i in range(100))
        ctx.step.sleep("nap", 0.2)
        return total

    worker = Worker(client, block_timeout=0.1)
    try:
        handle = hundred.run()
        assert worker.run_until_idle() == 1
        assert run_status(client, handle.id) == "suspended"
        time.sleep(0.3)
        assert len(wake_due(client)[0]) == 1
        counts = command_counts(raw, worker.run_until_idle)
        assert handle.result(timeout=5) == sum(range(100))
    finally:
        worker.close()
    assert ran == list(range(100))  # no step ran again
    # the claim's one HGETALL of the 100 step records; nothing read per step
    print("resume commands:", counts)
    assert counts.get("hgetall", 0) == 1, counts
    assert counts.get("hget", 0) <= 5, counts
    assert sum(counts.values()) < 60, counts


def test_async_task_group_of_waits_suspends_and_resumes(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("tg-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        return int(ctx.input) * 3

    @define_workflow("tg-parent", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> list[int]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(ctx.step.run_workflow(f"c{i}", child, i)) for i in range(3)]
        return [t.result() for t in tasks]

    workers.start()
    assert parent.run().result(timeout=30) == [0, 3, 6]


def test_wait_steps_bad_arguments(client: Client, registry: Registry, workers: WorkerPool) -> None:
    @define_workflow("args-child", registry=registry)
    def child(ctx: Context[Any]) -> None:
        return None

    @define_workflow("bad-args", registry=registry)
    def bad(ctx: Context[Any]) -> list[str]:
        out = []
        calls: list[Callable[[], Any]] = [
            lambda: ctx.step.run_workflows("a", child, "abc"),
            lambda: ctx.step.run_workflows("b", child, {"x": 1}),  # type: ignore[arg-type]
            lambda: ctx.step.run_workflow("c", child, None, timeout=-1),
            lambda: ctx.step.run_workflow("d", child, None, timeout=math.nan),
            lambda: ctx.step.wait_for_event("e", "", timeout=1),
            lambda: ctx.step.wait_for_event("f", "x" * 600),
            lambda: ctx.step.wait_for_event("g", "ok", timeout=0),
            lambda: ctx.step.run_workflow("h", 5, None),  # type: ignore[arg-type]
        ]
        for call in calls:
            try:
                call()
                out.append("no error")
            except (TypeError, ValueError) as exc:
                out.append(type(exc).__name__)
        return out

    workers.start()
    out = bad.run().result(timeout=15)
    assert out == ["TypeError", "TypeError", "ValueError", "ValueError", "ValueError",
                   "ValueError", "ValueError", "TypeError"]  # fmt: skip
    assert client.list_runs(workflow="args-child") == []


def test_run_workflows_enqueues_in_one_pipeline_and_checks_every_input_first(
    client: Client, registry: Registry, workers: WorkerPool, raw: redis.Redis
) -> None:
    import msgspec

    from redflow_mp.errors import InputValidationError

    class Item(msgspec.Struct):
        n: int

    @define_workflow("typed-child", registry=registry, schema=Item, max_concurrency=50)
    def child(ctx: Context[Item]) -> int:
        return ctx.input.n

    @define_workflow("typed-fan", registry=registry)
    def fan(ctx: Context[Any]) -> Any:
        if len(ctx.input) > 100:
            raw.script_flush()  # the pipeline meets NOSCRIPT: each call is resent alone
        try:
            return ctx.step.run_workflows("all", child, ctx.input)
        except InputValidationError as exc:
            return "invalid: " + str(exc)[:40]

    workers.start()
    out = fan.run([{"n": 1}, {"n": "two"}]).result(timeout=20)
    assert out.startswith("invalid: ")
    assert client.list_runs(workflow="typed-child") == []  # nothing stored half-way
    items = [{"n": i} for i in range(150)]
    assert fan.run(items).result(timeout=60) == list(range(150))
    assert len(client.list_runs(workflow="typed-child", limit=500)) == 150


def test_run_workflows_fails_as_soon_as_one_child_fails(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    gate = threading.Event()

    @define_workflow("early-child", registry=registry, max_concurrency=4)
    def child(ctx: Context[Any]) -> int:
        if ctx.input == "bad":
            raise ValueError("early failure")
        gate.wait(20)
        return 1

    @define_workflow("early-parent", registry=registry)
    def parent(ctx: Context[Any]) -> str:
        try:
            ctx.step.run_workflows("all", child, ["slow", "bad"])
        except RunFailedError as exc:
            return str(exc)
        return "no failure"

    workers.start()
    workers.start()
    workers.start()
    out = parent.run().result(timeout=15)  # while the slow child still runs
    assert "early failure" in out
    slow = [r for r in client.list_runs(workflow="early-child") if r.status.value == "running"]
    assert len(slow) == 1  # the other child runs on to its end
    gate.set()
    wait_until(lambda: client.get_run(slow[0].id).status.value == "succeeded", 10)  # type: ignore[union-attr]


@pytest.mark.parametrize("group", ["gather", "task_group"])
def test_async_gather_sibling_step_in_flight_runs_once(
    client: Client, registry: Registry, workers: WorkerPool, group: str
) -> None:
    """A step.run gathered with a wait that suspends is still running when the
    wait decides to suspend: the suspension waits for it and records it, so the
    resumed execution replays its output instead of running it again."""
    calls: list[int] = []

    async def slow_work() -> str:
        calls.append(1)  # counts starts: a body cancelled mid-way and run again counts twice
        await asyncio.sleep(0.4)
        return "worked"

    @define_workflow("gs-parent", registry=registry)
    async def parent(ctx: AsyncContext[Any]) -> list[Any]:
        if group == "gather":
            return list(
                await asyncio.gather(ctx.step.run("work", slow_work), ctx.step.sleep("nap", 0.2))
            )
        async with asyncio.TaskGroup() as tg:
            work = tg.create_task(ctx.step.run("work", slow_work))
            nap = tg.create_task(ctx.step.sleep("nap", 0.2))
        return [work.result(), nap.result()]

    workers.start()
    handle = parent.run()
    assert handle.result(timeout=30) == ["worked", None]
    assert calls == [1]
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["work"].status == "succeeded"


def test_deadlock_is_a_clear_error_past_256_slots(
    client: Client, registry: Registry, workers: WorkerPool
) -> None:
    """Workflow dl-big has 300 slots; 299 are held by suspended runs (sleeping on
    a queue no worker serves), the 300th by a parent that awaits a child of its
    own workflow: the child can never start. Past 256 slots the rule read
    nothing (script and replayed check alike): the parent suspended for good."""
    n = 300

    @define_workflow("dl-big", registry=registry, max_concurrency=n)
    def big(ctx: Context[Any]) -> Any:
        if ctx.input == "child":
            return "never runs"
        try:
            ctx.step.run_workflow("me", big, "child")
        except WaitDeadlockError as exc:
            return "deadlock: " + str(exc)
        return "no deadlock"

    scripts = client.scripts
    for _ in range(n - 1):
        scripts.enqueue(new_run_id(), "dl-big", "held", b'"x"', 1, 0, "", 60_000, "", "", n, None)
        _, held = scripts.claim(("held",), 60_000, new_token())
        assert held is not None
        nap = RunWait(steps=["nap"], kinds=["sleep"], wake_at=client.server_time_ms() + 3_600_000)
        assert scripts.suspend(held.id, held.token, nap) == "suspended"
    workers.start()
    out = big.run("parent").result(timeout=30)
    assert out.startswith("deadlock: ") and "all 300 max_concurrency" in out
