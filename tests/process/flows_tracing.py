"""Workflows traced under a real ``redflow-supervisor`` (tests/process/test_tracing.py).

Each supervisor child configures the OpenTelemetry SDK through
``tracing.setup_in_workers``: a batch span processor (its export thread lives
in the child only) whose exporter appends one JSON line per span to the file
named by ``TRACING_TEST_SPANS`` (a variable the settings loader ignores: it
reads only ``REDFLOW_*``). The processor's delay is long, so spans reach the
file only when the child flushes them on its way out.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from redflow_mp import Context, define_workflow, get_default_client, tracing


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line (with the exporting pid) to a file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            lines.append(
                json.dumps(
                    {
                        "name": s.name,
                        "trace_id": format(s.context.trace_id, "032x"),
                        "span_id": format(s.context.span_id, "016x"),
                        "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
                        "kind": s.kind.name,
                        "status": s.status.status_code.name,
                        "attributes": dict(s.attributes or {}),
                        "pid": os.getpid(),
                    }
                )
            )
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


@tracing.setup_in_workers
def configure() -> None:
    provider = TracerProvider()
    exporter = JsonLinesExporter(os.environ["TRACING_TEST_SPANS"])
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    trace.set_tracer_provider(provider)


@define_workflow("traced-child", queue="tc")
def traced_child(ctx: Context[int]) -> int:
    _parent_suspended(ctx.run.parent_run_id)
    return int(ctx.step.run("square", lambda: ctx.input * ctx.input))


def _parent_suspended(parent_id: str | None, timeout: float = 60.0) -> None:
    """Wait until the parent run has suspended at its wait for this child. A
    child finished before its parent read it lets the parent take its output at
    once, without suspending (one execution, not the two the test checks): the
    other process of the supervisor can do that while a loaded machine holds the
    parent's process between the child's start and that read."""
    client = get_default_client()
    assert client is not None and parent_id is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get_run(parent_id)
        if state is not None and state.status == "suspended":
            return
        time.sleep(0.01)


@define_workflow("traced-parent", queue="tp")
def traced_parent(ctx: Context[Any]) -> dict[str, Any]:
    base = ctx.step.run("load", lambda: 7)
    squared = ctx.step.run_workflow("square-it", traced_child, base, timeout=60)
    return {"squared": squared, "pid": os.getpid()}
