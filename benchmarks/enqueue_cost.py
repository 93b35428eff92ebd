"""Redis time and client CPU per one-by-one enqueue, alternating two trees.

``python -m benchmarks.enqueue_cost [--runs 10000] [--reps 5] [--baseline REF]``

What W2 of ``python -m benchmarks run`` does, without the harness: one client
process enqueues ``--runs`` no-op runs one at a time (``Workflow.run``, a fresh
``create_client``, ``redis`` imported first as the harness's client does), workers
stopped, against a private redis-server (``benchmarks.redis_server``), and
reports per enqueue the script's ``usec`` (``INFO commandstats`` of the script
call, one at a time as W2 sends it: cold caches after each wake-up of the server,
so above ``benchmarks.script_cost``'s pipelined figure), the client's CPU
(``time.process_time``, user and system) and the wall time. With ``--baseline``
(a git ref, ``git archive``d) the two trees take turns, ``--reps`` times each,
on a fresh server each time, and the medians of each side and of the pairs'
differences are printed: on a shared machine the load moves every figure, and a
pair's two halves run within seconds of each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.child_cost import export_ref  # noqa: E402
from benchmarks.redis_server import RedisServer  # noqa: E402

# Runs in the measured process (PYTHONPATH: the tree measured).
LOOP = """
import json, sys, time
import redis
from redflow_mp import create_client, define_workflow
from redflow_mp.registry import Registry

url, n = sys.argv[1], int(sys.argv[2])
r = redis.Redis.from_url(url)
r.flushall()
registry = Registry()


@define_workflow("bench-noop", queue="bench", max_concurrency=1000, registry=registry)
def noop(ctx):
    return None


client = create_client(url, prefix="bench", registry=registry)
run = noop.run
for _ in range(200):  # scripts loaded, connection open, caches warm
    run({})
r.config_resetstat()
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(n):
    run({})
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
stats = r.info("commandstats")
usec = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_fcall"))
calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_fcall"))
assert calls == n, (calls, n)
print(json.dumps({"redis_us": usec / n, "client_cpu_us": cpu * 1e6 / n, "wall_us": wall * 1e6 / n}))
"""

FIELDS = ("redis_us", "client_cpu_us", "wall_us")


def measure(code_root: Path, url: str, runs: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONPATH"] = str(code_root)
    out = subprocess.run(
        [sys.executable, "-c", LOOP, url, str(runs)],
        cwd=code_root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.enqueue_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="git ref to alternate with")
    ns = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="redflow-enqcost-"))
    roots = {"branch": ROOT}
    if ns.baseline:
        roots = {"baseline": export_ref(ns.baseline, tmp / "baseline"), "branch": ROOT}
    results: dict[str, list[dict[str, float]]] = {label: [] for label in roots}
    for _ in range(ns.reps):
        for label, root in roots.items():
            server = RedisServer()
            server.start()
            try:
                results[label].append(measure(root, server.url, ns.runs))
            finally:
                server.stop()
    for label, rows in results.items():
        line = ", ".join(
            f"{f} {statistics.median(r[f] for r in rows):.1f} "
            f"({min(r[f] for r in rows):.1f}-{max(r[f] for r in rows):.1f})"
            for f in FIELDS
        )
        print(f"{label:9s} medians of {len(rows)} (min-max): {line}")
    if ns.baseline:
        pairs = list(zip(results["baseline"], results["branch"], strict=True))
        line = ", ".join(
            f"{f} {statistics.median(b[f] - a[f] for a, b in pairs):+.1f}" for f in FIELDS
        )
        print(f"branch - baseline, median of the pairs: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
