"""Instructions per one-by-one enqueue of a client process, counted by callgrind.

``python -m benchmarks.enqueue_instr [--runs 1000,3000] [--ref REF ...] [--by-name]``

Timings of the harness's W2 (``Workflow.run`` in a loop) on a shared 2-core
machine move by ±10 % between runs, more than most changes to the client's
per-call Python; the instructions it executes do not. This runs, in one process
under ``valgrind --tool=callgrind``, what W2's client runs: ``noop.run({})`` of a
workflow defined as the benchmark's (a high ``max_concurrency``), with a client
made by ``create_client``, N times, for two sizes N1 < N2, against a private
redis-server (not under valgrind). The difference of the two totals over
N2 - N1 is the user-space instructions per enqueue (start-up and imports cancel
out). System calls count as one instruction each (what the kernel does for the
send and the receive is not in this figure). ``--by-name`` measures
``client.run_by_name`` instead. With ``--ref`` (repeatable) the same is counted
on the tree of each git ref. Like ``benchmarks.child_instr``, the process runs
with ``PYTHONHASHSEED=0`` so that every count sees the same dict layouts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.callgrind import compare  # noqa: E402

# Runs in the measured process (PYTHONPATH: the tree measured).
LOOP = """
import sys
import redis
from redflow_mp import create_client, define_workflow
from redflow_mp.registry import Registry

url, n, by_name = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
redis.Redis.from_url(url).flushall()
registry = Registry()


@define_workflow("bench-noop", queue="bench", max_concurrency=1000, registry=registry)
def noop(ctx):
    return None


client = create_client(url, prefix="ci", registry=registry)
noop.run({}, client=client)  # scripts loaded, connection open: not counted per run
if by_name:
    run = client.run_by_name
    for _ in range(n):
        run("bench-noop", {})
else:
    run = noop.run
    for _ in range(n):
        run({})
assert redis.Redis.from_url(url).zcard("{ci}:runs:created") == n + 1
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.enqueue_instr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", default="1000,3000", help="the two sizes N1,N2")
    ap.add_argument("--ref", action="append", default=[], help="git ref to count too")
    ap.add_argument("--by-name", action="store_true", help="client.run_by_name, not Workflow.run")
    ns = ap.parse_args(argv)
    n1, n2 = (int(x) for x in ns.runs.split(","))
    by_name = "1" if ns.by_name else "0"
    return compare(LOOP, sizes=(n1, n2), refs=ns.ref, extra_args=(by_name,), unit="enqueue")


if __name__ == "__main__":
    raise SystemExit(main())
