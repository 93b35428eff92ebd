"""Supervisor start-up timeline: spawn ``redflow-supervisor`` with runs already
queued and time its first completed run (and, optionally, the whole drain).

    python -m benchmarks.startup                  # 7 starts, 2,000 queued noop runs
    python -m benchmarks.startup --starts 11 --runs 5000 --procs 2
    python -m benchmarks.startup --imports 15     # also: wall time of the parent's import

Each start: FLUSHALL of a private ``redis-server`` (``benchmarks.redis_server``),
enqueue ``--runs`` ``bench-noop`` runs with ``run_many`` (in this process, before
the spawn), spawn ``redflow-supervisor --app bench --procs N --module
benchmarks.tasks.redflow_tasks --queues bench --url ...``, poll ``GET bm:done``
every millisecond (the handler INCRs it) and note when it first reaches 1 and
when it reaches ``--runs``; then TERM the supervisor's process group. Prints
each start and the medians. Not a test: no assertions on the numbers.
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

from benchmarks.redis_server import RedisServer
from benchmarks.tasks import common


def _supervisor_argv(python: str) -> list[str]:
    script = os.path.join(os.path.dirname(python), "redflow-supervisor")
    if os.path.exists(script):
        return [script]
    found = shutil.which("redflow-supervisor")
    return [found] if found else [python, "-m", "redflow_supervisor"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGQUIT)  # fast stop: the supervisor stops its children
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def one_start(
    server: RedisServer, argv: list[str], runs: int, env: dict[str, str]
) -> tuple[float, float]:
    """(seconds to the first completion, seconds to the last) of one start."""
    from benchmarks.tasks import redflow_tasks
    from redflow_mp import create_client

    r = server.client()
    r.flushall()
    client = create_client(url=server.url, prefix=common.prefix())
    try:
        redflow_tasks.noop.run_many([{}] * runs, client=client)
    finally:
        client.close()
    first = last = float("nan")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        deadline = start + 120
        while time.perf_counter() < deadline:
            done = int(r.get(common.COUNTER_KEY) or 0)
            now = time.perf_counter()
            if done >= 1 and first != first:
                first = now - start
            if done >= runs:
                last = now - start
                break
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {proc.returncode}")
            time.sleep(0.001)
    finally:
        _stop(proc)
        r.close()
    return first, last


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
        firsts, lasts = [], []
        for i in range(ns.starts):
            first, last = one_start(server, argv_, ns.runs, env)
            firsts.append(first)
            lasts.append(last)
            print(f"start {i + 1}: first completion {first:.3f} s, {ns.runs} runs {last:.3f} s")
        print(
            f"median of {ns.starts}: first completion {statistics.median(firsts):.3f} s "
            f"(min {min(firsts):.3f}, max {max(firsts):.3f}); "
            f"{ns.runs} runs {statistics.median(lasts):.3f} s"
        )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
