"""The Prometheus text of the supervisor's ``/metrics``: every family the code
emits is typed and described (a family missing from ``HELP`` was rendered
``untyped`` with its own name as its help)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redflow_mp import Registry, define_workflow
from redflow_mp.metrics import Metrics
from redflow_supervisor.exposition import HELP, OTHER, MetricsStore, encode_delta, render
from redflow_supervisor.metrics import MetricsHub
from redflow_supervisor.settings import load

ROOT = Path(__file__).resolve().parents[2]
# Metric names as the code spells them; the rest of these literals are not metrics.
_NOT_METRICS = {
    "process_id",
    "process_samples",
    "redflow_current_run",
    "redflow_current_step",
    "redflow_mp",
    "redflow_supervisor",
}


def test_the_count_of_known_queues_is_a_typed_gauge() -> None:
    """docs/operations.md lists ``redflow_queues_known`` as a gauge; the page said
    ``# TYPE redflow_queues_known untyped`` and ``# HELP redflow_queues_known
    redflow_queues_known``."""
    text = render(MetricsStore(), [("redflow_queues_known", (), 3.0)])
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    fam = fams["redflow_queues_known"]
    assert fam.type == "gauge"
    assert fam.documentation != "redflow_queues_known"
    assert [s.value for s in fam.samples] == [3.0]


def test_every_metric_name_in_the_code_has_a_type_and_help() -> None:
    names: set[str] = set()
    for package in ("redflow_mp", "supervisor"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r'"((?:redflow|process)_[a-z_]+)"', path.read_text()))
    metrics = names - _NOT_METRICS
    assert "redflow_runs_started_total" in metrics  # the scan finds the names
    assert sorted(n for n in metrics if n not in HELP) == []


def _busy_store(store: MetricsStore, workflows: int) -> None:
    """What children send for ``workflows`` workflows that each ran: two runs (one
    failed), a retry, a step, and the three histograms."""
    metrics = Metrics()
    for i in range(workflows):
        wf = f"wf-{i:05d}"
        metrics.inc_wf("redflow_runs_started_total", wf)
        metrics.inc_wf("redflow_runs_finished_total", wf, "succeeded")
        metrics.inc_wf("redflow_runs_finished_total", wf, "failed")
        metrics.inc("redflow_run_retries_total", workflow=wf)
        metrics.observe_wf("redflow_queue_wait_seconds", 0.02, wf)
        metrics.observe_wf("redflow_run_duration_seconds", 0.5 + i, wf)
        metrics.inc("redflow_steps_total", workflow=wf, status="succeeded")
        metrics.observe("redflow_step_duration_seconds", 0.1, workflow=wf)
    for piece in encode_delta(metrics.drain()):
        store.merge(json.loads(piece))
    store.inc("redflow_cron_fires_total", 3.0)


def _totals(text: str) -> dict[str, float]:
    """Each sample name's sum over every label set but ``le`` buckets."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if "le" not in s.labels:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_a_scrape_of_thousands_of_workflows_stays_small_and_keeps_the_totals() -> None:
    """5,000 workflows made a page of 315,000 lines (22.7 MB) that took seconds
    to render inside the arbiter's loop, past the endpoint's 5 s deadline. By
    default the first 100 workflows met keep their series and the others' are
    summed under workflow="_other"; every total is the same."""
    workflows = 5000
    running = [
        ("redflow_workflow_running", (("workflow", f"wf-{i:05d}"),), 1.0) for i in range(workflows)
    ]
    capped = MetricsStore(max_workflows=load({}, environ={}).metrics_max_workflows)
    _busy_store(capped, workflows)
    text = render(capped, running)
    whole = MetricsStore(max_workflows=0)
    _busy_store(whole, workflows)
    want: dict[str, float] = {"redflow_workflow_running": float(workflows)}
    for (name, _), value in whole.counters.items():
        want[name] = want.get(name, 0.0) + value
    for (name, _), hist in whole.hists.items():
        want[f"{name}_sum"] = want.get(f"{name}_sum", 0.0) + hist[-2]
        want[f"{name}_count"] = want.get(f"{name}_count", 0.0) + hist[-1]
    assert _totals(text) == pytest.approx(want)
    lines = text.count("\n")
    assert lines < 7000, f"{lines} lines for {workflows} workflows"
    shown = {
        s.labels["workflow"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if "workflow" in s.labels
    }
    assert len(shown) == 101 and OTHER in shown
    assert f"wf-{0:05d}" in shown  # the first met keep their own
    other = [
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "redflow_workflow_running" and s.labels["workflow"] == OTHER
    ]
    assert other == [workflows - 100]


def test_the_cap_applies_to_the_parent_s_own_counts_and_zero_is_no_cap() -> None:
    store = MetricsStore(max_workflows=2)
    for wf in ("a", "b", "c", "d", "a"):
        store.inc("redflow_runs_suspended_total", workflow=wf)
    got = {labels: v for (name, labels), v in store.counters.items()}
    assert got == {
        (("workflow", "a"),): 2.0,
        (("workflow", "b"),): 1.0,
        (("workflow", OTHER),): 2.0,
    }
    free = MetricsStore()
    for wf in ("a", "b", "c"):
        free.inc("redflow_runs_suspended_total", workflow=wf)
    assert len(free.counters) == 3 and not free.workflows


def test_the_hub_gives_the_supervisor_s_first_workflows_by_name_their_series() -> None:
    registry = Registry()
    for name in ("zeta", "alpha", "mid", "beta"):
        define_workflow(name, registry=registry)(lambda ctx: None)
    hub = MetricsHub(list, 2, registry)
    try:
        hub.store.inc("redflow_runs_suspended_total", workflow="zeta")
        hub.store.inc("redflow_runs_suspended_total", workflow="beta")
        assert hub.store.workflows == {"alpha", "beta"}
        assert {labels for _, labels in hub.store.counters} == {
            (("workflow", OTHER),),
            (("workflow", "beta"),),
        }
    finally:
        hub.shutdown()
