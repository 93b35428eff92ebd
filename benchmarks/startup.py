"""Supervisor start-up timeline: spawn ``redflow-supervisor`` with runs already
queued, time its first completed run, the whole drain and, once it is idle, its
exit after SIGTERM.

    python -m benchmarks.startup                  # 7 starts, 2,000 queued noop runs
    python -m benchmarks.startup --starts 11 --runs 5000 --procs 2
    python -m benchmarks.startup --imports 15     # also: wall time of the parent's import

Each start: FLUSHALL of a private ``redis-server`` (``benchmarks.redis_server``),
enqueue ``--runs`` ``bench-noop`` runs with ``run_many`` (in this process, before
the spawn), spawn ``redflow-supervisor --app bench --procs N --module
benchmarks.tasks.redflow_tasks --queues bench --url ...``, poll ``GET bm:done``
every millisecond (the handler INCRs it) and note when it first reaches 1 and
when it reaches ``--runs``. Then, the supervisor idle for ``--idle`` seconds
(children blocked on their queues), SIGTERM it and time its exit (KILL after
10 s). Per start it prints:

- ``first``: spawn to the first completed run;
- ``full``: spawn to full throughput, the time the drain lost to start-up: where
  the straight line through the second half of the drain (its steady rate)
  meets zero runs done. A supervisor whose children all started claiming at
  once at ``full`` and drained at the steady rate would finish at the same time;
- ``drain``: spawn to the last completed run;
- ``term``: SIGTERM to exit, idle.

and the medians with min-max. Not a test: no assertions on the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.redis_server import RedisServer
from benchmarks.tasks import common


def _supervisor_argv(python: str) -> list[str]:
    script = os.path.join(os.path.dirname(python), "redflow-supervisor")
    if os.path.exists(script):
        return [script]
    found = shutil.which("redflow-supervisor")
    return [found] if found else [python, "-m", "redflow_supervisor"]


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGQUIT) -> float:
    """Signal the supervisor (QUIT: fast stop; TERM: graceful drain) and wait for
    it; returns the seconds it took to exit (its process group is KILLed after 10 s)."""
    if proc.poll() is not None:
        return 0.0
    start = time.perf_counter()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Start:
    """One start's timeline, in seconds from the spawn (``term``: from the SIGTERM)."""

    first: float
    full: float
    drain: float
    term: float


def full_throughput(samples: list[tuple[float, int]], runs: int) -> float:
    """Where the line through the drain's second half (``runs / 2`` done to all
    done: the steady rate) meets zero runs done."""
    half = next((t, d) for t, d in samples if d >= runs // 2)
    end = samples[-1]
    if end[1] <= half[1] or end[0] <= half[0]:
        return half[0]
    rate = (end[1] - half[1]) / (end[0] - half[0])
    return end[0] - end[1] / rate


def one_start(
    server: RedisServer, argv: list[str], runs: int, env: dict[str, str], idle: float = 0.2
) -> Start:
    """The timeline of one start (see the module docstring)."""
    from benchmarks.tasks import redflow_tasks
    from redflow_mp import create_client

    r = server.client()
    r.flushall()
    client = create_client(url=server.url, prefix=common.prefix())
    try:
        redflow_tasks.noop.run_many([{}] * runs, client=client)
    finally:
        client.close()
    first = last = term = float("nan")
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        deadline = start + 120
        while time.perf_counter() < deadline:
            done = int(r.get(common.COUNTER_KEY) or 0)
            now = time.perf_counter()
            if done:
                samples.append((now - start, done))
            if done >= 1 and first != first:
                first = now - start
            if done >= runs:
                last = now - start
                break
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {proc.returncode}")
            time.sleep(0.001)
        time.sleep(idle)  # children blocked on their empty queue
        term = _stop(proc, signal.SIGTERM)
    finally:
        _stop(proc)
        r.close()
    return Start(first, full_throughput(samples, runs) if samples else last, last, term)


def import_times(python: str, count: int) -> list[float]:
    """Wall seconds of ``import redflow_supervisor.cli`` in a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter(); import redflow_supervisor.cli; "
        "print(time.perf_counter() - t)"
    )
    return [
        float(subprocess.run([python, "-c", code], check=True, capture_output=True).stdout)
        for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    p.add_argument("--starts", type=int, default=7)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--imports", type=int, default=0, help="also time the import N times")
    p.add_argument("--python", default=sys.executable)
    p.add_argument(
        "--idle", type=float, default=0.2, help="seconds idle after the drain before SIGTERM"
    )
    ns = p.parse_args(argv)
    if ns.imports:
        times = import_times(ns.python, ns.imports)
        print(
            f"import redflow_supervisor.cli: median {statistics.median(times) * 1000:.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, n={len(times)})"
        )
    server = RedisServer()
    server.start()
    try:
        env = {**os.environ, common.ENV_URL: server.url, common.ENV_PREFIX: common.prefix()}
        os.environ[common.ENV_URL] = server.url
        argv_ = [
            *_supervisor_argv(ns.python),
            "--app",
            "bench",
            "--procs",
            str(ns.procs),
            "--module",
            "benchmarks.tasks.redflow_tasks",
            "--queues",
            common.QUEUE,
            "--url",
            server.url,
            "--prefix",
            common.prefix(),
            "--log-level",
            "warning",
        ]
        starts: list[Start] = []
        for i in range(ns.starts):
            one = one_start(server, argv_, ns.runs, env, ns.idle)
            starts.append(one)
            print(
                f"start {i + 1}: first {one.first * 1000:.0f} ms, full {one.full * 1000:.0f} ms, "
                f"{ns.runs} runs {one.drain * 1000:.0f} ms, TERM to exit {one.term * 1000:.0f} ms"
            )
        parts = []
        for name in ("first", "full", "drain", "term"):
            values = [getattr(one, name) * 1000 for one in starts]
            parts.append(
                f"{name} {statistics.median(values):.0f} ms ({min(values):.0f}-{max(values):.0f})"
            )
        print(f"median of {ns.starts} (min-max): " + ", ".join(parts))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
