"""Durable waits, measured (issue 12): what suspension frees, and what it costs.

    python -m benchmarks.waits [--procs 2] [--only NAME[,NAME...]] [--json]
        [--parents 1000] [--child-ms 2] [--fan 4] [--fan-seconds 1.0]
        [--sleepers 10000] [--spread 20] [--events 300] [--steps 100]

Each part runs against a private redis-server (``benchmarks.redis_server``) and
one ``redflow-supervisor --procs N`` serving the workflows of
``benchmarks.tasks.waits_tasks``, with default settings otherwise:

``freeing``
    ``--parents`` parents, each ``ctx.step.run_workflow`` one child that burns
    ``--child-ms`` of CPU. Every handler execution notes its start and end, so
    the report gives the most executions ever in flight at once (at most
    ``--procs``: a waiting parent holds no process) and the wall time against
    the children's own work divided by ``--procs``.
``fanout``
    One parent ``ctx.step.run_workflows`` ``--fan`` pure-Python children of
    ``--fan-seconds`` each (calibrated in this process first). Wall time from
    enqueue to result.
``sleepers``
    ``--sleepers`` runs ``ctx.step.sleep_until`` wake-up times spread evenly
    over ``--spread`` seconds, starting once all are enqueued and suspended:
    processes held while they sleep (runs ``running``), Redis bytes per
    suspended run (``used_memory`` before and after), and the wake-up lateness
    (handler resumed minus wake-up time) p50/p99/max.
``events``
    One at a time: a run waits in ``ctx.step.wait_for_event``; once it is
    ``suspended``, ``client.send_event`` and the time until its handler resumed
    (the handler notes the time), p50/p99, with idle processes available.
``replay``
    One run of ``--steps`` steps then a short sleep: the Redis commands that
    read its step records during the resume, counted with ``MONITOR``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.procs import ManagedProcess
from benchmarks.redis_server import RedisServer
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench-waits"
PARTS = ("freeing", "fanout", "sleepers", "events", "replay")


class Bench:
    """One private Redis and one supervisor, restarted for every part."""

    def __init__(self, procs: int) -> None:
        self.procs = procs
        self.server = RedisServer()
        self.server.start()
        self.raw = self.server.client()
        self.sup: ManagedProcess | None = None
        os.environ["BENCH_REDIS_URL"] = self.server.url
        os.environ["BENCH_PREFIX"] = PREFIX
        from redflow_mp import create_client

        self.client = create_client(self.server.url, prefix=PREFIX)

    def start(self) -> None:
        self.raw.flushall()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
        env.update({"PYTHONPATH": str(ROOT)})
        self.sup = ManagedProcess(
            [sys.executable, "-m", "redflow_supervisor", "--app", "bench-waits",
             "--procs", str(self.procs), "--module", "benchmarks.tasks.waits_tasks",
             "--url", self.server.url, "--prefix", PREFIX, "--queues", "bench",
             "--log-level", "warning"],
            env=env,
            cwd=str(ROOT),
            log_path=self.server.workdir / "supervisor.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while self.client.get_workflow_meta("wb-replay") is None:
            if time.monotonic() > deadline or not self.sup.alive():
                raise RuntimeError(f"supervisor did not start: {self.sup.log_tail(20)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.sup is not None:
            self.sup.stop(grace=15.0)
            self.sup = None

    def close(self) -> None:
        self.stop()
        self.client.close()
        self.server.stop()

    def count(self, status: str) -> int:
        return int(self.raw.zcard(f"{{{PREFIX}}}:runs:status:{status}"))

    def wait(self, what: str, cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            if self.sup is not None and not self.sup.alive():
                raise RuntimeError(f"supervisor died: {self.sup.log_tail(20)}")
            time.sleep(0.01)


def _iterations_for(seconds: float) -> int:
    from benchmarks.tasks.waits_tasks import burn

    # CPU time, not wall time: the calibration must not depend on what else the
    # machine is doing at that moment.
    n = 200_000
    while True:
        t0 = time.process_time()
        burn(n)
        took = time.process_time() - t0
        if took > 0.1:
            return int(n * seconds / took)
        n *= 2


def _max_overlap(pairs: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in pairs] + [(e, -1) for _, e in pairs])
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def _executions(raw: redis.Redis) -> list[tuple[float, float]]:
    from benchmarks.tasks.waits_tasks import EXEC_KEY

    out = []
    for item in raw.lrange(EXEC_KEY, 0, -1):
        s, e = item.decode().split()
        out.append((float(s), float(e)))
    return out


def part_freeing(b: Bench, parents: int, child_ms: float) -> dict[str, Any]:
    from benchmarks.tasks.waits_tasks import parent

    iterations = _iterations_for(child_ms / 1000.0)
    t0 = time.perf_counter()
    handles = [parent.run({"iterations": iterations}, client=b.client) for _ in range(parents)]
    for h in handles:
        h.result(timeout=600)
    wall = time.perf_counter() - t0
    pairs = _executions(b.raw)
    child_work = parents * child_ms / 1000.0
    return {
        "parents": parents,
        "procs": b.procs,
        "child_ms": child_ms,
        "wall_s": round(wall, 3),
        "children_work_over_procs_s": round(child_work / b.procs, 3),
        "executions": len(pairs),
        "max_in_flight": _max_overlap(pairs),
        "succeeded": b.count("succeeded"),
    }


def part_fanout(b: Bench, fan: int, seconds: float) -> dict[str, Any]:
    from benchmarks.tasks.waits_tasks import burn
    from benchmarks.tasks.waits_tasks import fan as fan_wf

    iterations = _iterations_for(seconds)
    t0 = time.process_time()
    burn(iterations)
    alone = time.process_time() - t0
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        fan_wf.run({"children": fan, "iterations": iterations}, client=b.client).result(timeout=600)
        walls.append(time.perf_counter() - t0)
    return {
        "children": fan,
        "procs": b.procs,
        "child_alone_s": round(alone, 3),
        "wall_s_runs": [round(w, 3) for w in walls],
        "wall_s_median": round(statistics.median(walls), 3),
        "sequential_s": round(alone * fan, 3),
    }


def part_sleepers(b: Bench, n: int, spread: float) -> dict[str, Any]:
    from benchmarks.tasks.waits_tasks import LATE_KEY, sleeper

    mem0 = int(b.raw.info("memory")["used_memory"])
    # wake-up times: evenly over `spread` s, starting after a generous head start
    # for enqueueing and the first executions (measured, then checked below)
    head = 10.0 + n / 1500.0
    start_at = time.time() + head
    t0 = time.perf_counter()
    pipe_client = b.client
    for i in range(n):
        sleeper.run({"at": start_at + spread * i / n}, client=pipe_client)
    enqueue_s = time.perf_counter() - t0
    b.wait("every sleeper suspended", lambda: b.count("suspended") >= n, head + 60)
    suspended_after = time.time()
    if suspended_after > start_at:
        raise RuntimeError("the sleepers were not all suspended before the first wake-up")
    running = b.count("running")
    mem1 = int(b.raw.info("memory")["used_memory"])
    b.wait("every sleeper resumed", lambda: b.count("succeeded") >= n, head + spread + 120)
    late = [float(x) * 1000.0 for x in b.raw.lrange(LATE_KEY, 0, -1)]
    return {
        "sleepers": n,
        "procs": b.procs,
        "enqueue_s": round(enqueue_s, 2),
        "all_suspended_s_before_first_wake": round(start_at - suspended_after, 2),
        "running_while_sleeping": running,
        "redis_bytes_per_suspended_run": round((mem1 - mem0) / n),
        "lateness_ms_p50": round(percentile(late, 50), 1),
        "lateness_ms_p99": round(percentile(late, 99), 1),
        "lateness_ms_max": round(max(late), 1),
        "resumed": len(late),
    }


def _status(b: Bench, run_id: str) -> Any:
    state = b.client.get_run(run_id)
    return None if state is None else state.status


def part_events(b: Bench, n: int) -> dict[str, Any]:
    from benchmarks.tasks.waits_tasks import RESUMED_KEY, waiter
    from redflow_mp import RunStatus

    lat = []
    for i in range(n + 20):  # the first 20 warm up
        h = waiter.run({}, client=b.client)
        b.wait("the waiter suspended", lambda rid=h.id: _status(b, rid) == RunStatus.SUSPENDED, 30)
        sent = time.time()
        assert h.send_event("go", {"i": i})
        got = b.raw.blpop([RESUMED_KEY], timeout=30)
        if got is None:
            raise RuntimeError("the waiter did not resume")
        if i >= 20:
            lat.append((float(got[1]) - sent) * 1000.0)
        h.result(timeout=30)
    return {
        "events": n,
        "send_to_resume_ms_p50": round(percentile(lat, 50), 3),
        "send_to_resume_ms_p99": round(percentile(lat, 99), 3),
    }


def part_replay(b: Bench, steps: int) -> dict[str, Any]:
    from benchmarks.tasks.waits_tasks import REPLAYED_KEY, replay

    h = replay.run({"steps": steps, "nap": 1.0}, client=b.client)
    b.wait("the run suspended", lambda: b.count("suspended") >= 1, 30)
    steps_key = f"{{{PREFIX}}}:run:{h.id}:steps"
    reads: list[str] = []
    writes: list[str] = []
    stop = threading.Event()

    def monitor() -> None:
        conn = b.server.client()
        with conn.monitor() as m:
            for cmd in m.listen():
                text = str(cmd.get("command", ""))
                if "wb-monitor-end" in text:
                    break
                if steps_key in text:
                    verb = text.split(" ", 1)[0].upper()
                    (
                        reads
                        if verb in ("HGET", "HGETALL", "HMGET", "HSCAN", "HVALS", "HKEYS")
                        else writes
                    ).append(verb)
        stop.set()

    th = threading.Thread(target=monitor, daemon=True)
    th.start()
    time.sleep(0.2)
    b.wait("the run resumed", lambda: b.raw.get(REPLAYED_KEY) is not None, 30)
    h.result(timeout=30)
    b.raw.echo("wb-monitor-end")
    stop.wait(10)
    return {
        "steps": steps,
        "reads_of_step_records_on_resume": len(reads),
        "read_commands": sorted(set(reads)),
        "writes_to_step_records_on_resume": len(writes),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--only", default=",".join(PARTS), help="parts to run, comma-separated")
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--child-ms", type=float, default=2.0)
    ap.add_argument("--fan", type=int, default=4)
    ap.add_argument("--fan-seconds", type=float, default=1.0)
    ap.add_argument("--sleepers", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=20.0)
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p!r}; choose from {', '.join(PARTS)}")
    b = Bench(args.procs)
    results: dict[str, Any] = {"procs": args.procs, "redis": b.server.version,
                               "cpus": os.cpu_count(), "load": os.getloadavg()[0]}  # fmt: skip
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "freeing": lambda: part_freeing(b, args.parents, args.child_ms),
        "fanout": lambda: part_fanout(b, args.fan, args.fan_seconds),
        "sleepers": lambda: part_sleepers(b, args.sleepers, args.spread),
        "events": lambda: part_events(b, args.events),
        "replay": lambda: part_replay(b, args.steps),
    }
    try:
        for p in parts:
            b.start()
            try:
                results[p] = runners[p]()
            finally:
                b.stop()
            print(f"{p}: {json.dumps(results[p])}", flush=True)
    finally:
        b.close()
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
