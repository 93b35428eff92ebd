"""The Prometheus text of the supervisor's ``/metrics``: every family the code
emits is typed and described (a family missing from ``HELP`` was rendered
``untyped`` with its own name as its help)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from redflow_supervisor.exposition import HELP, MetricsStore, render

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
