"""OpenTelemetry across a real supervisor: the test process enqueues inside a span;
the children (their SDK set up by ``tracing.setup_in_workers``, spans flushed at
exit) export spans of the same trace, each hanging under the right parent."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry import trace

from redflow_mp import Client
from tests.process import flows_tracing
from tests.process.conftest import Supervisor
from tests.tracing_support import global_provider, hex_span, hex_trace

pytestmark = pytest.mark.process


def test_spans_of_the_enqueuer_and_of_the_children_share_one_trace(
    supervisor: Callable[..., Supervisor], client: Client, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    sup = supervisor(
        procs=2,
        modules=["tests.process.flows_tracing"],
        env={"TRACING_TEST_SPANS": str(spans_file)},
    )
    sup.wait_workers(2)
    # The parent never ran the setup: no exporter thread in the process that forks.
    assert psutil.Process(sup.pid).num_threads() == 1
    with global_provider() as mine:
        with trace.get_tracer("test").start_as_current_span("http request") as request:
            handle = flows_tracing.traced_parent.run(None, client=client)
        out = handle.result(timeout=60)
    assert out["squared"] == 49
    assert not spans_file.exists()  # still in the children's batch processors
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    # The parent executes twice: it suspends at its durable wait `square-it` and
    # resumes by replay once the child has finished. Its first execution's spans
    # (the one that loaded, and started the child) are the ones kept by name.
    assert len(spans) == 8
    first = {
        ("redflow.run traced-parent", "suspend"),
        ("redflow.step load", "succeeded"),
        ("redflow.step square-it", "suspended"),
    }
    by_name: dict[str, dict[str, Any]] = {}
    for s in spans:
        attrs = s["attributes"]
        if attrs["redflow.run_id"] != handle.id or (s["name"], attrs["redflow.outcome"]) in first:
            by_name[s["name"]] = s
    replayed = sorted(
        (s["name"], s["attributes"]["redflow.outcome"])
        for s in spans
        if s["attributes"]["redflow.run_id"] == handle.id and s not in by_name.values()
    )
    assert replayed == [
        ("redflow.run traced-parent", "succeeded"),
        ("redflow.step load", "cached"),
        ("redflow.step square-it", "succeeded"),
    ], spans
    assert sorted(by_name) == [
        "redflow.run traced-child",
        "redflow.run traced-parent",
        "redflow.step load",
        "redflow.step square",
        "redflow.step square-it",
    ], spans
    ctx = request.get_span_context()
    assert {s["trace_id"] for s in spans} == {hex_trace(ctx.trace_id)}
    assert [s.name for s in mine.get_finished_spans()] == ["http request"]
    parent_run = by_name["redflow.run traced-parent"]
    child_run = by_name["redflow.run traced-child"]
    assert parent_run["parent_id"] == hex_span(ctx.span_id)
    assert parent_run["kind"] == child_run["kind"] == "CONSUMER"
    assert by_name["redflow.step load"]["parent_id"] == parent_run["span_id"]
    assert by_name["redflow.step square-it"]["parent_id"] == parent_run["span_id"]
    # The child run hangs under the parent's step that started it, and its own step
    # under it.
    assert child_run["parent_id"] == by_name["redflow.step square-it"]["span_id"]
    assert by_name["redflow.step square"]["parent_id"] == child_run["span_id"]
    assert parent_run["attributes"] == {
        "redflow.workflow": "traced-parent",
        "redflow.run_id": handle.id,
        "redflow.attempt": 1,
        "redflow.queue": "tp",
        "messaging.system": "redflow",
        "messaging.destination.name": "tp",
        "messaging.operation.type": "process",
        "redflow.outcome": "suspend",
    }
    assert child_run["attributes"]["redflow.parent_run_id"] == handle.id
    assert child_run["attributes"]["redflow.queue"] == "tc"
    assert by_name["redflow.step square-it"]["attributes"]["redflow.step.wait"] is True
    # Exported by the supervisor's children, not by this process or the supervisor.
    pids = {s["pid"] for s in spans}
    assert out["pid"] in pids and not pids & {sup.pid, psutil.Process().pid}
