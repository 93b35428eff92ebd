"""Instructions per run of a supervisor child's worker loop, counted by callgrind.

``python -m benchmarks.child_instr [--runs 1000,3000] [--ref REF ...] [--variant V]``

Timings of a drain on a shared 2-core machine move by ±10 % between runs, more
than most changes to the worker's per-run Python; the instructions it executes
do not. This runs, in one process and under ``valgrind --tool=callgrind``, what
a supervisor child runs per run: a :class:`~redflow_mp.worker.Worker` with the
child's hooks (``redflow_supervisor.child._Hooks``: the status board, titles,
the checks before each claim, metrics sent down a pipe) against a private
redis-server, over N no-op runs enqueued beforehand, for two sizes N1 < N2
(work the clock triggers, metrics sent to the parent and lease renewals, is
kept out: at valgrind's pace it would count many times over). The
difference of the two totals over N2 - N1 is the user-space instructions per
run in the steady state (start-up and imports cancel out). System calls are
counted as one instruction each: what the kernel does for them is not in this
figure (``benchmarks.child_cost`` measures the child's CPU, kernel included).
With ``--ref`` (repeatable) the same is counted on the tree of each git ref.

``--variant handler-redis``: each handler also makes one ``INCR`` through a
redis-py client of its own, made once per process (the harness's handler-redis
variant; ``benchmarks/tasks/common.py``); the difference to ``noop`` is what
that call costs inside the worker. ``--variant bare``: that ``INCR`` alone, N
times in a loop with no worker (per ``INCR``), what redis-py costs by itself.
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
import os, signal, sys
import redis
from redflow_mp import create_client, define_workflow
from redflow_mp.registry import Registry
from redflow_mp.worker import Worker
from redflow_supervisor import child as ch
from redflow_supervisor.board import Board

url, n, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
redis.Redis.from_url(url).flushall()
registry = Registry()
own = redis.Redis.from_url(url)  # the handler's own client (handler-redis, bare)
if variant == "bare":  # redis-py's INCR alone, in a loop: no worker
    for _ in range(n):
        own.incr("ci:handler")
    raise SystemExit(0)
incr = own.incr if variant == "handler-redis" else None


@define_workflow("ci-noop", queue="ci", max_concurrency=100000, registry=registry)
def _noop(ctx):
    if incr is not None:
        incr("ci:handler")
    return None


client = create_client(url, prefix="ci", registry=registry, default=False)
for start in range(0, n, 1000):
    _noop.run_many(list(range(start, min(n, start + 1000))), client=client)
registry.freeze()
read_end, write_end = os.pipe()
os.set_blocking(write_end, False)
board = Board(1)
spec = ch.ChildSpec(
    index=0, slot=0, app="ci", url=url, prefix="ci", queues=("ci",), lease_ms=5000,
    metrics_fd=write_end,
)
hooks = ch._Hooks(board, spec)
hooks.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
hooks.dispositions = {sig: signal.getsignal(sig) for sig in ch.HANDLED_SIGNALS}
hooks.watched = tuple(s for s, h in hooks.dispositions.items() if h is not signal.SIG_DFL)
# Work done by the clock, not per run, would be counted per run 50 times over at
# valgrind's pace: metrics go down the pipe once (natively once a second, every
# ~10,000 runs), and the lease (60 s) is not renewed during the count.
hooks.flush_metrics(force=True)
hooks._next_flush = float("inf")
worker = Worker(client, queues=["ci"], registry=registry, hooks=hooks, max_runs=n,
                metrics=hooks.metrics, lease_ms=60000)
worker.run()
assert worker.runs_done == n, worker.runs_done
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.child_instr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", default="1000,3000", help="the two sizes N1,N2")
    ap.add_argument("--ref", action="append", default=[], help="git ref to count too")
    ap.add_argument(
        "--variant",
        choices=("noop", "handler-redis", "bare"),
        default="noop",
        help="noop handlers (default); handlers making one INCR through a redis-py "
        "client of their own; bare: that INCR alone in a loop, no worker",
    )
    ns = ap.parse_args(argv)
    n1, n2 = (int(x) for x in ns.runs.split(","))
    unit = "INCR" if ns.variant == "bare" else "run"
    return compare(LOOP, sizes=(n1, n2), refs=ns.ref, extra_args=(ns.variant,), unit=unit)


if __name__ == "__main__":
    raise SystemExit(main())
