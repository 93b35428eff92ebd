"""Metric recording in worker processes: what a worker counts and times.

A :class:`Metrics` object counts and times what a worker does (runs started and
finished by workflow and status, retries, steps, queue wait, run and step
durations). It is cheap to update (a dict and a lock) and is drained as a
delta: a supervisor child sends its deltas to its parent, which sums them and
serves one ``/metrics`` page for the whole host (``redflow_supervisor.exposition``
owns that side: the delta pipe, the totals and the Prometheus text format).

Invariant: every histogram uses :data:`BUCKETS`, so deltas from many processes
add up bucket by bucket.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["BUCKETS", "FINAL", "Labels", "Metrics", "labels_of"]

# Seconds; shared by every histogram so deltas from many children add up.
BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)

_FIRST_BUCKET = BUCKETS[0]

Labels = tuple[tuple[str, str], ...]

#: The final statuses a finish is counted under (redflow_runs_finished_total).
FINAL = ("succeeded", "failed", "canceled")

# started, queue wait, duration, finished by final status
_RunKeys = tuple[
    tuple[str, Labels], tuple[str, Labels], tuple[str, Labels], dict[str, tuple[str, Labels]]
]


def labels_of(items: Mapping[str, str]) -> Labels:
    """The canonical (sorted) label tuple of a metric series."""
    if len(items) == 1:  # the hot case (workflow=...): no sort needed
        ((k, v),) = items.items()
        return ((str(k), str(v)),)
    return tuple(sorted((str(k), str(v)) for k, v in items.items()))


class Metrics:
    """Thread-safe counters and histograms, drained as deltas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._hists: dict[tuple[str, Labels], list[float]] = {}
        self._wf_keys: dict[tuple[str, str, str], tuple[str, Labels]] = {}
        self._runs: dict[str, _RunKeys] = {}  # run_started / run_ended, by workflow

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._inc((name, labels_of(labels)), value)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self._observe((name, labels_of(labels)), seconds)

    def _wf_key(self, name: str, workflow: str, status: str) -> tuple[str, Labels]:
        """The series key of ``name`` for ``workflow=`` (and ``status=`` when not
        empty), made once per series: the per-run updates skip building labels."""
        got = self._wf_keys.get((name, workflow, status))
        if got is None:
            labels = {"workflow": workflow, "status": status} if status else {"workflow": workflow}
            got = (name, labels_of(labels))
            if len(self._wf_keys) >= 10_000:  # bounded, whatever the names
                self._wf_keys.clear()
            self._wf_keys[(name, workflow, status)] = got
        return got

    # inc_wf and observe_wf are a worker's four updates a run: the key lookup and
    # the update are written out here (not _wf_key/_inc/_observe), two Python
    # calls fewer each.

    def inc_wf(self, name: str, workflow: str, status: str = "") -> None:
        """``inc(name, workflow=workflow[, status=status])``, cheaper per call."""
        key = self._wf_keys.get((name, workflow, status)) or self._wf_key(name, workflow, status)
        with self._lock:
            counters = self._counters
            counters[key] = counters.get(key, 0.0) + 1.0

    def observe_wf(self, name: str, seconds: float, workflow: str) -> None:
        """``observe(name, seconds, workflow=workflow)``, cheaper per call."""
        key = self._wf_keys.get((name, workflow, "")) or self._wf_key(name, workflow, "")
        slot = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            hist = self._hists.get(key)
            if hist is None:
                hist = [0.0] * (len(BUCKETS) + 3)  # buckets..., +Inf, sum, count
                self._hists[key] = hist
            hist[slot] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def _run_keys(self, workflow: str) -> _RunKeys:
        """The series keys of a worker's per-run updates for ``workflow``, made once."""
        got = (
            self._wf_key("redflow_runs_started_total", workflow, ""),
            self._wf_key("redflow_queue_wait_seconds", workflow, ""),
            self._wf_key("redflow_run_duration_seconds", workflow, ""),
            {s: self._wf_key("redflow_runs_finished_total", workflow, s) for s in FINAL},
        )
        if len(self._runs) >= 10_000:  # bounded, whatever the names
            self._runs.clear()
        self._runs[workflow] = got
        return got

    # run_started and run_ended are a worker's two updates a run, each one lock
    # and one key lookup (by the workflow's name): about 5,800 CPU instructions
    # an update, four updates a run before.

    def run_started(self, workflow: str, wait: float | None) -> None:
        """``inc_wf("redflow_runs_started_total", workflow)`` and, unless ``wait``
        is None, ``observe_wf("redflow_queue_wait_seconds", wait, workflow)``."""
        keys = self._runs.get(workflow) or self._run_keys(workflow)
        with self._lock:
            counters = self._counters
            counters[keys[0]] = counters.get(keys[0], 0.0) + 1.0
            if wait is not None:
                hist = self._hists.get(keys[1])
                if hist is None:
                    hist = self._hists[keys[1]] = [0.0] * (len(BUCKETS) + 3)
                hist[bisect.bisect_left(BUCKETS, wait)] += 1
                hist[-2] += wait
                hist[-1] += 1

    def run_ended(self, workflow: str, seconds: float, status: str = "") -> None:
        """``observe_wf("redflow_run_duration_seconds", seconds, workflow)`` and,
        when ``status`` is a final one (:data:`FINAL`), ``inc_wf(
        "redflow_runs_finished_total", workflow, status)``."""
        keys = self._runs.get(workflow) or self._run_keys(workflow)
        finished = keys[3].get(status)
        # bisect_left's answer for a run under the first bucket (a short handler's
        # duration) without its call: about 700 CPU instructions a run
        slot = 0 if seconds <= _FIRST_BUCKET else bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            hist = self._hists.get(keys[2])
            if hist is None:
                hist = self._hists[keys[2]] = [0.0] * (len(BUCKETS) + 3)
            hist[slot] += 1
            hist[-2] += seconds
            hist[-1] += 1
            if finished is not None:
                counters = self._counters
                counters[finished] = counters.get(finished, 0.0) + 1.0

    def _inc(self, key: tuple[str, Labels], value: float) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def _observe(self, key: tuple[str, Labels], seconds: float) -> None:
        slot = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            hist = self._hists.get(key)
            if hist is None:
                hist = [0.0] * (len(BUCKETS) + 3)  # buckets..., +Inf, sum, count
                self._hists[key] = hist
            hist[slot] += 1
            hist[-2] += seconds
            hist[-1] += 1

    def drain(self) -> dict[str, Any]:
        """Return and reset everything recorded since the last drain (JSON-able)."""
        with self._lock:
            counters, self._counters = self._counters, {}
            hists, self._hists = self._hists, {}
        return {
            "c": [[name, [list(p) for p in labels], v] for (name, labels), v in counters.items()],
            "h": [[name, [list(p) for p in labels], h] for (name, labels), h in hists.items()],
        }

    def empty(self) -> bool:
        with self._lock:
            return not self._counters and not self._hists
