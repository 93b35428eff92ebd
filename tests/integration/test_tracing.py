"""OpenTelemetry (the ``otel`` extra): the enqueuer's trace context stored on the
run, a span per execution and per step, child runs in their parent step's trace;
nothing traced and nothing read without a tracer provider.

In-process workers (threads) and the SDK's in-memory exporter; the same across a
real supervisor is ``tests/process/test_tracing.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from redflow_mp import AsyncContext, Client, Context, Registry, Retries, define_workflow
from redflow_mp.aio import create_async_client
from tests.helpers import WorkerPool, monitor, text, wait_until
from tests.process.conftest import ROOT
from tests.tracing_support import by_name, global_provider, hex_span, hex_trace

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    with global_provider() as exporter:
        yield exporter


def _traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{hex_trace(ctx.trace_id)}-{hex_span(ctx.span_id)}-{ctx.trace_flags:02x}"


def test_enqueue_stores_the_callers_context_and_only_then(
    client: Client, registry: Registry, raw: redis.Redis, spans: InMemorySpanExporter
) -> None:
    @define_workflow("traced-enqueue", registry=registry)
    def wf(ctx: Context[Any]) -> None: ...

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        inside = wf.run({"n": 1})
    outside = wf.run({"n": 2})
    stored = raw.hgetall(f"{{{client.prefix}}}:run:{inside.id}")
    assert text(stored[b"traceparent"]) == _traceparent(span)
    assert b"tracestate" not in stored  # empty: not written
    assert not {b"traceparent", b"tracestate"} & set(
        raw.hgetall(f"{{{client.prefix}}}:run:{outside.id}")
    )


def test_run_and_step_spans_continue_the_enqueuers_trace(
    client: Client, registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    @define_workflow("traced", queue="tq", registry=registry)
    def wf(ctx: Context[Any]) -> int:
        a = ctx.step.run("fetch", lambda: 20)
        b = ctx.step.run("compute", lambda: a + 1)
        return int(b) * 2

    workers.start(queues=["tq"])
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        handle = wf.run()
    assert handle.result(timeout=20) == 42
    got = by_name(spans.get_finished_spans())
    run, fetch, compute = (
        got["redflow.run traced"],
        got["redflow.step fetch"],
        got["redflow.step compute"],
    )
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in got.values()} == {trace_id}
    assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id
    assert run.parent.is_remote  # it came through Redis, not the thread's context
    assert run.kind is SpanKind.CONSUMER
    assert fetch.parent is not None and fetch.parent.span_id == run.context.span_id
    assert compute.parent is not None and compute.parent.span_id == run.context.span_id
    assert dict(run.attributes or {}) == {
        "redflow.workflow": "traced",
        "redflow.run_id": handle.id,
        "redflow.attempt": 1,
        "redflow.queue": "tq",
        "messaging.system": "redflow",
        "messaging.destination.name": "tq",
        "messaging.operation.type": "process",
        "redflow.outcome": "succeeded",
    }
    assert run.status.status_code is StatusCode.UNSET
    assert dict(fetch.attributes or {}) == {
        "redflow.workflow": "traced",
        "redflow.run_id": handle.id,
        "redflow.attempt": 1,
        "redflow.step": "fetch",
        "redflow.step.cached": False,
        "redflow.outcome": "succeeded",
    }
    # The steps ran inside the run span (start/end nest).
    assert run.start_time is not None and fetch.start_time is not None
    assert run.end_time is not None and compute.end_time is not None
    assert run.start_time <= fetch.start_time and compute.end_time <= run.end_time


def test_a_retried_run_marks_failures_and_cached_steps(
    client: Client, registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    attempts: list[int] = []

    @define_workflow(
        "flaky-traced",
        registry=registry,
        retries=Retries(max_attempts=2, initial_delay=0.01, max_delay=0.01, jitter=0),
    )
    def wf(ctx: Context[Any]) -> str:
        ctx.step.run("once", lambda: "done")
        attempts.append(ctx.run.attempt)
        if ctx.run.attempt == 1:
            ctx.step.run("boom", _boom)
        return "ok"

    workers.start()
    with trace.get_tracer("test").start_as_current_span("request") as request:
        handle = wf.run()
    assert handle.result(timeout=20) == "ok"
    assert attempts == [1, 2]
    finished = spans.get_finished_spans()
    runs = sorted(
        (s for s in finished if s.name == "redflow.run flaky-traced"),
        key=lambda s: str((s.attributes or {})["redflow.attempt"]),
    )
    assert [(s.attributes or {})["redflow.outcome"] for s in runs] == ["retry", "succeeded"]
    first, second = runs
    assert second.status.status_code is StatusCode.UNSET
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "ValueError: boom"
    assert [e.name for e in first.events] == ["exception"]
    # Both attempts are children of the enqueuing span: one trace.
    for s in runs:
        assert s.parent is not None and s.parent.span_id == request.get_span_context().span_id
    steps = [s for s in finished if s.name.startswith("redflow.step")]
    outcome = {
        (s.name, (s.attributes or {})["redflow.attempt"]): (
            (s.attributes or {})["redflow.outcome"],
            (s.attributes or {}).get("redflow.step.cached"),
        )
        for s in steps
    }
    assert outcome == {
        ("redflow.step once", 1): ("succeeded", False),
        ("redflow.step boom", 1): ("failed", None),
        ("redflow.step once", 2): ("cached", True),
    }


def _boom() -> None:
    raise ValueError("boom")


def test_a_child_run_joins_its_parent_steps_trace(
    client: Client, registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    def parent_suspended() -> bool:
        state = client.get_run(handle.id)
        return state is not None and state.status == "suspended"

    @define_workflow("t-child", queue="kids", registry=registry)
    def child(ctx: Context[Any]) -> int:
        # A child finished before its parent read it at `call` lets the parent take
        # its output without suspending (one execution, not the two checked below):
        # the kids worker can do that while a loaded machine holds the parent's
        # thread between the start and the read. Wait for the suspension first.
        wait_until(parent_suspended, 20, message="the parent to suspend")
        return int(ctx.step.run("square", lambda: ctx.input * ctx.input))

    @define_workflow("t-parent", queue="main", registry=registry)
    def parent(ctx: Context[Any]) -> Any:
        emitted = ctx.step.emit_workflow("fire", "t-child", 3)
        return [ctx.step.run_workflow("call", child, 4, timeout=20), emitted]

    workers.start(queues=["main"])
    workers.start(queues=["kids"])
    # Enqueued inside a span: every execution of the parent (it suspends at `call`
    # and resumes by replay) continues that trace, as do the children.
    with trace.get_tracer("test").start_as_current_span("request") as request:
        handle = parent.run()
    out, emitted = handle.result(timeout=20)
    assert out == 16
    client.handle(emitted).result(timeout=20)

    # result() returns once the finish is written; the worker ends the run's span just
    # after it, so the last run spans may still be open here (1 == 2 parent runs seen).
    def runs_ended() -> bool:
        names = [s.name for s in spans.get_finished_spans()]
        return names.count("redflow.run t-parent") >= 2 and names.count("redflow.run t-child") >= 2

    wait_until(runs_ended, 10, message="the spans of the parent's and children's runs")
    finished = spans.get_finished_spans()
    # The parent executes twice: it suspends at `call` and resumes by replay once
    # the child has finished; the spans of its first execution started the children.
    got: dict[tuple[str, Any], Any] = {}
    for s in sorted(finished, key=lambda s: s.start_time or 0):
        if s.name != "request":
            got.setdefault((s.name, (s.attributes or {})["redflow.run_id"]), s)
    parent_runs = [s for s in finished if s.name == "redflow.run t-parent"]
    assert len(parent_runs) == 2
    assert {s.parent.span_id if s.parent else 0 for s in parent_runs} == {
        request.get_span_context().span_id
    }
    parent_run = got[("redflow.run t-parent", handle.id)]
    call_step = got[("redflow.step call", handle.id)]
    assert (call_step.attributes or {})["redflow.outcome"] == "suspended"
    assert (call_step.attributes or {})["redflow.step.wait"] is True
    assert call_step.parent is not None and call_step.parent.span_id == parent_run.context.span_id
    calls = [s for s in finished if s.name == "redflow.step call"]
    assert sorted(str((s.attributes or {})["redflow.outcome"]) for s in calls) == [
        "succeeded", "suspended",
    ]  # fmt: skip
    fire_step = got[("redflow.step fire", handle.id)]
    kids = [s for s in finished if s.name == "redflow.run t-child"]
    assert len(kids) == 2
    by_parent_step = {s.parent.span_id if s.parent else 0: s for s in kids}
    assert set(by_parent_step) == {call_step.context.span_id, fire_step.context.span_id}
    called = by_parent_step[call_step.context.span_id]
    assert (called.attributes or {})["redflow.parent_run_id"] == handle.id
    assert {s.context.trace_id for s in finished} == {request.get_span_context().trace_id}
    # The child's own step hangs under the child's run span.
    square = [
        s
        for s in finished
        if s.name == "redflow.step square"
        and (s.attributes or {})["redflow.run_id"] == (called.attributes or {})["redflow.run_id"]
    ]
    assert len(square) == 1 and square[0].parent is not None
    assert square[0].parent.span_id == called.context.span_id


def test_async_handlers_and_the_async_client(
    client: Client,
    registry: Registry,
    redis_url: str,
    prefix: str,
    workers: WorkerPool,
    spans: InMemorySpanExporter,
) -> None:
    @define_workflow("t-async", registry=registry)
    async def wf(ctx: AsyncContext[Any]) -> int:
        one = await ctx.step.run("one", _later, 1)
        both = await asyncio.gather(
            ctx.step.run("two", lambda: 2), ctx.step.run("three", _later, 3)
        )
        return one + sum(both)

    workers.start()

    async def main() -> tuple[str, Any]:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            with trace.get_tracer("test").start_as_current_span("async-request") as request:
                handle = await wf.arun(client=ac)
            return _traceparent(request), await handle.result(timeout=20)
        finally:
            await ac.aclose()

    parent, result = asyncio.run(main())
    assert result == 6
    got = by_name(spans.get_finished_spans())
    run = got["redflow.run t-async"]
    assert run.parent is not None
    assert parent.startswith(
        f"00-{hex_trace(run.context.trace_id)}-{hex_span(run.parent.span_id)}-"
    )
    for name in ("one", "two", "three"):
        step = got[f"redflow.step {name}"]
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        assert (step.attributes or {})["redflow.outcome"] == "succeeded"


async def _later(value: int) -> int:
    await asyncio.sleep(0)
    return value


def test_without_a_provider_nothing_is_stored_or_read(
    client: Client, registry: Registry, redis_url: str, raw: redis.Redis, workers: WorkerPool
) -> None:
    @define_workflow("untraced", registry=registry)
    def wf(ctx: Context[Any]) -> int:
        return int(ctx.step.run("s", lambda: 1))

    workers.start()
    wf.run().result(timeout=20)  # warm: scripts loaded
    with global_provider():
        pass  # set, then unset: the API is back to its default proxy
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def one() -> tuple[str, list[str]]:
        with monitor(redis_url) as mon:
            with trace.get_tracer("test").start_as_current_span("request"):
                handle = wf.run()
            assert handle.result(timeout=20) == 1
            return handle.id, [line for line in mon.snapshot() if '"tracepa' in line]

    run_id, seen = one()
    assert seen == []  # neither written at enqueue nor read by the executor
    assert b"traceparent" not in raw.hgetall(f"{{{client.prefix}}}:run:{run_id}")
    with global_provider() as exporter:  # the control: with one, both happen
        run_id, seen = one()
    assert any('"HMGET"' in line and '"traceparent"' in line for line in seen), seen
    assert any('"HSET"' in line and '"traceparent"' in line for line in seen), seen
    assert {s.name for s in exporter.get_finished_spans()} == {
        "request",
        "redflow.run untraced",
        "redflow.step s",
    }


# A process that enqueues a run and executes it (an in-process worker), then
# reports which opentelemetry modules redflow added to those redis-py imports
# itself (redis-py 8 imports the API when it is installed, for its own
# instrumentation). ``absent`` makes the extra look uninstalled: a None entry in
# sys.modules is how Python marks a module as missing (``find_spec`` answers
# None, ``import`` raises ModuleNotFoundError).
_CHILD = """
import json, sys
if sys.argv[3] == "absent":
    sys.modules["opentelemetry"] = None
import redis

def otel():
    return {m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v}

base = otel()
from redflow_mp import Context, Registry, Worker, create_client, define_workflow, tracing
from redflow_mp.executor import Executor
from redflow_mp.steps import Step
import redflow_supervisor.child

registry = Registry()

@define_workflow("plain", registry=registry)
def plain(ctx: Context[int]) -> int:
    return ctx.step.run("double", lambda: ctx.input * 2)

client = create_client(sys.argv[1], prefix=sys.argv[2], registry=registry)
handle = plain.run(21)
Worker(client, registry=registry, max_runs=1, block_timeout=0.1).run()
print(json.dumps({
    "result": handle.result(timeout=10),
    "installed": tracing.INSTALLED,
    "undecorated": not hasattr(Executor.execute, "__wrapped__")
    and not hasattr(Step._run, "__wrapped__"),
    "trace_args": list(tracing.trace_args()),
    "base": len(base),
    "added": sorted(otel() - base),
}))
client.close()
"""


@pytest.mark.parametrize("extra", ["absent", "installed"])
def test_no_opentelemetry_import_unless_the_application_made_one(
    redis_url: str, prefix: str, extra: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, redis_url, prefix, extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["result"] == 42
    assert report["added"] == []  # nothing imported, with the extra or without
    if extra == "absent":
        assert report["base"] == 0
    assert report["trace_args"] == []
    assert report["installed"] is (extra == "installed")
    # Without the extra the hooks are the plain functions: no wrapper, no cost.
    assert report["undecorated"] is (extra == "absent")


SECRET = "pw-Never-Exported-41"


def _unreachable() -> None:
    raise ConnectionError(f"Error connecting to redis://admin:{SECRET}@db.internal:6379/0")


def test_a_redis_password_in_an_error_is_masked_in_every_span(
    client: Client, registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    """A step whose error names a Redis URL with its password: the run stores it
    masked (``mask_secrets``), and so must every span exported to the tracing
    backend. The step span recorded the exception itself (the SDK's
    ``record_exception`` and status), password included."""

    @define_workflow("leaky-traced", registry=registry)
    def wf(ctx: Context[Any]) -> str:
        ctx.step.run("connect", _unreachable)
        return "never"

    workers.start()
    handle = wf.run()
    with pytest.raises(Exception, match=re.escape("redis://admin:***@db.internal")):
        handle.result(timeout=20)
    finished = spans.get_finished_spans()
    assert {s.name for s in finished} >= {"redflow.run leaky-traced", "redflow.step connect"}
    leaks = [
        (s.name, where)
        for s in finished
        for where, value in [
            ("status", s.status.description),
            *((f"attribute {k}", v) for k, v in (s.attributes or {}).items()),
            *(
                (f"event {e.name} {k}", v)
                for e in s.events
                for k, v in (e.attributes or {}).items()
            ),
        ]
        if SECRET in str(value)
    ]
    assert leaks == [], f"the Redis password was exported in {leaks}"


def test_a_suspension_is_no_error_in_any_span(
    client: Client, registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    """A run suspending raises ``Suspend`` (a BaseException, the runtime's own
    control flow) through any step that begins after the wait decided it, here a
    step in a ``finally``. The OpenTelemetry SDK records only ``Exception`` in a
    span (not BaseException: GeneratorExit, cancellation): no span of a run that
    merely suspended may have an ERROR status or an ``exception`` event."""

    @define_workflow("nap-tidy", registry=registry)
    def wf(ctx: Context[Any]) -> str:
        try:
            ctx.step.sleep("nap", 3600)
        finally:
            ctx.step.run("tidy", lambda: 1)
        return "never"

    workers.start()
    handle = wf.run()

    def suspended() -> bool:
        state = client.get_run(handle.id)
        return state is not None and state.status == "suspended"

    wait_until(suspended, 20, message="the run to suspend")
    wait_until(lambda: len(spans.get_finished_spans()) >= 3, 20, message="three spans")
    errors = [
        (s.name, s.status.status_code.name, [e.name for e in s.events])
        for s in spans.get_finished_spans()
        if s.status.status_code is StatusCode.ERROR or s.events
    ]
    assert errors == [], f"a run that suspended exported errors: {errors}"


def _refused() -> None:
    raise redis.exceptions.ConnectionError("refused")


def test_a_failed_steps_exception_event_names_its_type_in_full(
    registry: Registry, workers: WorkerPool, spans: InMemorySpanExporter
) -> None:
    """The ``exception`` event's ``exception.type`` is the exception's module and
    qualified name, as the OpenTelemetry SDK records it (tracing backends group
    errors by it): a Redis ``ConnectionError`` is not the built-in one."""

    @define_workflow("refused-traced", registry=registry)
    def wf(ctx: Context[Any]) -> None:
        ctx.step.run("dial", _refused)

    workers.start()
    with pytest.raises(Exception, match="refused"):
        wf.run().result(timeout=20)
    step = by_name(spans.get_finished_spans())["redflow.step dial"]
    events = [(e.name, (e.attributes or {}).get("exception.type")) for e in step.events]
    assert events == [("exception", "redis.exceptions.ConnectionError")], (
        f"the failed step's events (name, exception.type): {events}"
    )
    assert step.status.description == "ConnectionError: refused"
