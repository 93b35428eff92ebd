"""The supervisor's ``/metrics`` page with thousands of workflows: its size and
the time the arbiter's loop spends rendering it, capped and not.

``python -m benchmarks.metrics_scale [--workflows 5000] [--cap 100]``

What children send for each workflow that ran (two runs, one failed, a retry,
a step; the queue-wait, run and step histograms) is merged into the parent's
store as the arbiter does (the delta pipe's JSON lines), with a
``redflow_workflow_running`` gauge per workflow, then rendered: once with
``metrics_max_workflows = 0`` (no cap: what every scrape cost before the cap)
and once with ``--cap`` (the default, 100). The render runs inside the
arbiter's single-threaded loop, so its time is time the loop is not reaping,
renewing leases or answering signals. In-process, no Redis.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from redflow_mp.metrics import Metrics
from redflow_supervisor.exposition import MetricsStore, encode_delta, render


def _store(workflows: int, cap: int) -> MetricsStore:
    metrics = Metrics()
    for i in range(workflows):
        wf = f"workflow-{i:05d}"
        metrics.inc_wf("redflow_runs_started_total", wf)
        metrics.inc_wf("redflow_runs_finished_total", wf, "succeeded")
        metrics.inc_wf("redflow_runs_finished_total", wf, "failed")
        metrics.inc("redflow_run_retries_total", workflow=wf)
        metrics.observe_wf("redflow_queue_wait_seconds", 0.02, wf)
        metrics.observe_wf("redflow_run_duration_seconds", 0.5, wf)
        metrics.inc("redflow_steps_total", workflow=wf, status="succeeded")
        metrics.observe("redflow_step_duration_seconds", 0.1, workflow=wf)
    store = MetricsStore(max_workflows=cap)
    for piece in encode_delta(metrics.drain()):
        store.merge(json.loads(piece))
    return store


def measure(workflows: int, cap: int, reps: int = 3) -> str:
    store = _store(workflows, cap)
    gauges = [
        ("redflow_workflow_running", (("workflow", f"workflow-{i:05d}"),), 1.0)
        for i in range(workflows)
    ]
    times = []
    body = ""
    for _ in range(reps):
        t0 = time.perf_counter()
        body = render(store, gauges)
        times.append(time.perf_counter() - t0)
    return (
        f"{workflows:,} workflows, metrics_max_workflows={cap}: {body.count(chr(10)):,} lines, "
        f"{len(body) / 1e6:.2f} MB, render {statistics.median(times) * 1000:.0f} ms "
        f"(median of {reps})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.metrics_scale", description=__doc__)
    ap.add_argument("--workflows", type=int, default=5000)
    ap.add_argument("--cap", type=int, default=100)
    ns = ap.parse_args(argv)
    print(measure(ns.workflows, 0), flush=True)
    print(measure(ns.workflows, ns.cap), flush=True)


if __name__ == "__main__":
    main()
