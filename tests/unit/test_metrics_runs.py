"""A worker's two per-run metric updates (``run_started``, ``run_ended``) record
what its four separate updates recorded."""

from __future__ import annotations

import bisect
import math
from typing import Any

from redflow_mp.metrics import BUCKETS, Metrics


def _four(m: Metrics, wf: str, wait: float | None, took: float, status: str) -> None:
    m.inc_wf("redflow_runs_started_total", wf)
    if wait is not None:
        m.observe_wf("redflow_queue_wait_seconds", wait, wf)
    m.observe_wf("redflow_run_duration_seconds", took, wf)
    if status in ("succeeded", "failed", "canceled"):
        m.inc_wf("redflow_runs_finished_total", wf, status)


def _two(m: Metrics, wf: str, wait: float | None, took: float, status: str) -> None:
    m.run_started(wf, wait)
    m.run_ended(wf, took, status)


def _sorted(drained: dict[str, Any]) -> dict[str, Any]:
    return {k: sorted(v, key=repr) for k, v in drained.items()}


def test_run_started_and_run_ended_record_what_the_four_updates_recorded() -> None:
    runs: list[tuple[str, float | None, float, str]] = [
        ("a", 0.002, 0.0001, "succeeded"),
        ("a", None, 0.3, "failed"),
        ("b", 12.0, 0.0, "canceled"),
        ("b", 0.0, 5000.0, ""),  # a retry, or a lost lease: its time, no finish count
        ("(unregistered)", 0.001, 0.001, "queued"),
        ("a", 0.0011, 2.5, "succeeded"),
    ]
    four, two = Metrics(), Metrics()
    for run in runs:
        _four(four, *run)
        _two(two, *run)
    assert _sorted(two.drain()) == _sorted(four.drain())
    assert two.empty()
    _two(two, "a", 0.5, 0.5, "succeeded")  # after a drain: new series again
    _four(four, "a", 0.5, 0.5, "succeeded")
    assert _sorted(two.drain()) == _sorted(four.drain())


def test_the_per_workflow_keys_are_bounded() -> None:
    m = Metrics()
    for i in range(10_010):
        m.run_started(f"wf{i}", None)
    assert len(m._runs) <= 10_000
    m.run_ended("wf0", 1.0, "succeeded")
    got = m.drain()
    assert [
        "redflow_runs_finished_total",
        [["status", "succeeded"], ["workflow", "wf0"]],
        1.0,
    ] in got["c"]


def test_run_ended_puts_a_duration_in_bisect_lefts_bucket_at_every_edge() -> None:
    """``run_ended`` skips ``bisect_left`` under the first bound: every duration
    lands in the bucket ``bisect_left`` gives (Prometheus ``le``: a duration equal
    to a bound counts in that bound's bucket), at and next to each bound, zero,
    negative (a clock step), infinite and NaN."""
    edges: list[float] = [0.0, -0.0, -1.0, -math.inf, math.inf, math.nan, 1e-9]
    for bound in BUCKETS:
        edges += [bound, math.nextafter(bound, 0.0), math.nextafter(bound, math.inf)]
    for seconds in edges:
        m = Metrics()
        m.run_ended("a", seconds, "succeeded")
        (hist,) = [h for name, _, h in m.drain()["h"] if name == "redflow_run_duration_seconds"]
        counts = hist[: len(BUCKETS) + 1]
        assert counts.index(1.0) == bisect.bisect_left(BUCKETS, seconds), seconds
        assert sum(counts) == 1.0, seconds
