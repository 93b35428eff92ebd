"""The benchmark harness must not rot: run every workload once, tiny, redflow only.

No timing assertion (numbers from a shared CI machine mean nothing); the run must
complete, measure every workload and stop everything it started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


def test_quick_benchmark_run_measures_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    before = {p.pid for p in psutil.process_iter()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--systems",
            "redflow",
            "--quick",
            "--no-progress",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for label in (
        "W1 drain",
        "W2 enqueue",
        "W3 CPU",
        "W4 round trip",
        "W5 steps",
        "W6 fan-out",
        "W7 memory",
        "Redis cost per run",
    ):
        assert label in proc.stdout, label
    assert out.exists() and out.stat().st_size > 0
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.info["pid"] not in before
        and "redflow-supervisor[bench]" in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, leftovers
