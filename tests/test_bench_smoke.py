"""The benchmark harness must not rot: run every workload once, tiny, redflow only.

No timing assertion (numbers from a shared CI machine mean nothing); the run must
complete, measure every workload and stop everything it started.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)

# Not REDFLOW_*: the supervisor reads those as settings (and refuses unknown ones).
MARKER = "BENCH_SMOKE_RUN_ID"


def _ours(marker: str) -> list[psutil.Process]:
    """Live processes started by this run (they inherit its marker variable).

    Matched by environment, not by name: another engineer's benchmark on the
    same machine runs processes with the same names.
    """
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _run_bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run the harness (redflow only, tiny sizes); return its report and JSON file."""
    out = tmp_path / "bench.json"
    marker = uuid.uuid4().hex
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--systems",
            "redflow",
            "--quick",
            # Long enough that the drain outlasts the harness's 3 ms polls on a
            # busy machine (the per-run figures need completions after the first).
            "--n-drain",
            "400",
            "--no-progress",
            "--json",
            str(out),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, MARKER: marker},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    leftovers = _ours(marker)
    assert not leftovers, leftovers
    data: dict[str, Any] = json.loads(out.read_text())
    return proc.stdout, data


def test_quick_benchmark_run_measures_every_workload(tmp_path: Path) -> None:
    stdout, data = _run_bench(tmp_path)
    for label in (
        "W1 drain",
        "W2 enqueue",
        "W2B bulk enqueue",
        "W3 CPU",
        "W4 round trip",
        "W5 steps",
        "W6 fan-out",
        "W7 memory",
        "Redis cost per run",
        "CPU per run (W1)",
        "Redis time by command",
    ):
        assert label in stdout, label
    redflow = data["systems"]["redflow"]
    summary = redflow["summary"]
    # The cost of every run is measured, for every piece the issue names.
    for key in (
        "cost.redis_us_per_run",
        "cost.script_us_per_run",
        "cost.cpu_us_per_run",
        "cost.worker_cpu_us_per_run",
        "cost.parent_cpu_us_per_run",
        "cost.client_cpu_us_per_enqueue",
        "w2.client_cpu_us",
        "w2.redis_us",
    ):
        assert summary.get(key) is not None, key
    # The SLOWLOG pass names each function: one enqueue_run per enqueue.
    enqueue = {e["command"]: e for e in redflow["extra"]["slowlog_pass"]["enqueue"]["top"]}
    # (EVALSHA by default; the harness names each script by its SHA-1.)
    assert enqueue["evalsha enqueue_run"]["calls_per_run"] == pytest.approx(1.0)
    execute = {e["command"] for e in redflow["extra"]["slowlog_pass"]["execute"]["top"]}
    assert "evalsha claim_run" in execute
    # W2B: measured once Workflow.run_many exists, reported as not available until then.
    if "w2b_unavailable" in redflow["extra"]:
        assert "Workflow.run_many" in redflow["extra"]["w2b_unavailable"]
        assert "not available" in stdout
    else:
        assert summary["w2b.rate"]["median"] > 0


def test_handler_redis_variant_and_scale(tmp_path: Path) -> None:
    stdout, data = _run_bench(
        tmp_path,
        "--workloads",
        "W1,W2,W4",
        "--handler-redis",
        "--no-monitor",
        "--scale",
        "--scale-sizes",
        "200,400",
    )
    assert "W1 side by side" in stdout
    assert "handler-redis variant" in stdout
    assert "B/queued run" in stdout and "B/finished run" in stdout
    samples = data["systems"]["redflow"]["samples"]
    # Both variants measured side by side (the harness checks that each handler
    # of the variant made its own Redis call, or the case fails).
    assert samples["w1.rate"] and samples["w1.rate@handler-redis"]
    assert samples["w4.p50"] and samples["w4.p50@handler-redis"]
    for n in (200, 400):
        assert samples[f"scale.{n}.bytes_per_queued"][0] > 0
        assert samples[f"scale.{n}.bytes_per_run"][0] > 0
        assert samples[f"scale.{n}.us_per_run"][0] > 0
        assert samples[f"scale.{n}.enqueue_us_per_run"][0] > 0


def test_scale_sizes_accept_suffixes_and_reject_bad_values() -> None:
    # Imported by name: benchmarks/ is outside the type-checked packages (its
    # peer task modules use untyped libraries), so mypy must not follow it.
    parser = importlib.import_module("benchmarks.cli").build_parser()
    args = parser.parse_args(["run", "--scale-sizes", "1k,10k,100k,1m"])
    assert args.scale_sizes == (1_000, 10_000, 100_000, 1_000_000)
    for bad in ("10k,1k", "many", "1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--scale-sizes", bad])


@pytest.mark.parametrize("variant", [(), ("--handler-redis",)], ids=["noop", "handler-redis"])
def test_child_cost_runs_and_counts_waits(tmp_path: Path, variant: tuple[str, ...]) -> None:
    """``benchmarks.child_cost`` (and its handler-redis variant, which checks itself
    that every handler made its one INCR) completes and reports per-run figures."""
    out = tmp_path / "cost.json"
    args = ["--runs", "2000", "--reps", "1", "--json", str(out), *variant]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.child_cost", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = json.loads(out.read_text())["branch"]
    assert row["child_us"]["median"] > 0
    assert row["calls"]["median"] > 0.5  # one claim call a run in the steady state
    assert row["waits"]["median"] > 0  # the child blocked for the claims' replies
