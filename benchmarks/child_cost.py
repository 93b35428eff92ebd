"""Child CPU, parent CPU and Redis time per run of a one-process drain, steady state.

``python -m benchmarks.child_cost [--runs 20000] [--reps 3] [--baseline REF | --baseline-root DIR]
[--handler-redis]``

Against a private redis-server (``tests/redis_server.py``, ``--save ""
--appendonly no``): a client process enqueues ``--runs`` no-op runs of one
workflow with no worker running, then ``redflow-supervisor --procs 1`` drains
them. The steady state is the window from the moment ``--skip`` runs (default
10 %) have succeeded to the moment all have: the worker's start-up and its last
idle wait stay out. Over that window, per run:

* ``child``: the supervisor child's CPU (``psutil`` ``cpu_times`` user + system);
* ``parent``: the supervisor parent's CPU (same);
* ``script``: the ``usec`` of the script calls in ``INFO commandstats``
  (``evalsha`` / ``fcall``: the claim call with the finish it carries; Redis 7
  also counts their inner commands on their own lines, which are not added);
* ``redis``: the server's ``used_cpu_user + used_cpu_sys``;
* ``waits``: the child's voluntary context switches (``psutil``
  ``num_ctx_switches``): how many times a run it blocked, in practice waiting
  for a reply that was not there yet (a count, not a time; on a loaded machine
  a child preempted between its send and its read finds some replies there
  already, so it reads lower).

``--handler-redis``: each handler also makes one ``INCR`` through a redis-py
client of its own, made once per process (the harness's handler-redis variant):
compared with a run without it, what one Redis call of a handler adds to the
child's CPU, Redis's CPU and the child's waits.

The harness's own polling (one ``ZCARD`` every 20 ms) is not a script call.
With ``--baseline REF`` (``git archive`` of REF) or ``--baseline-root DIR`` the
same case runs on that code too, alternating with this tree each repetition;
medians and ranges are printed. ``CHILD_COST_PROFILE=FILE`` (or
``--profile FILE``) wraps the child's worker loop in cProfile and writes its
stats to FILE (one drain of this tree; the profile inflates the CPU figures).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.supervised import supervised  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

FLOWS = """
import os

from redflow_mp import define_workflow


_URL = os.environ.get("CHILD_COST_HANDLER_REDIS")  # the handler-redis variant
_own = None


@define_workflow("cc-noop", queue="cc", max_concurrency=100000)
def _noop(ctx):
    global _own
    if _URL:  # one INCR through a redis-py client of the handler's own
        if _own is None:
            import redis

            _own = redis.Redis.from_url(_URL)
        _own.incr("cc:handler")
    return None


_PROFILE = os.environ.get("CHILD_COST_PROFILE")
if _PROFILE:  # wrap the child's worker loop (this module is imported before the fork)
    import cProfile

    from redflow_mp import worker as _worker

    _run = _worker.Worker.run

    def _profiled(self):
        prof = cProfile.Profile()
        prof.enable()
        try:
            _run(self)
        finally:
            prof.disable()
            prof.dump_stats(_PROFILE)

    _worker.Worker.run = _profiled
"""

ENQUEUE = """
import sys
import childcost_flows
from redflow_mp import create_client
url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = create_client(url, prefix=prefix, default=False)
wf = childcost_flows._noop
for start in range(0, n, 1000):
    wf.run_many(list(range(start, min(n, start + 1000))), client=c)
c.close()
"""

_SCRIPTS = {"evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"}
PREFIX = "cc"


@dataclass
class Sample:
    done: int
    child: float
    child_sys: float
    parent: float
    script_usec: int
    script_calls: int
    redis_cpu: float
    t: float
    waits: int = 0


@dataclass
class Result:
    label: str
    runs: int
    seconds: float
    child_us: float
    child_sys_us: float
    parent_us: float
    script_us: float
    calls: float
    redis_us: float
    waits: float = 0.0

    def line(self) -> str:
        return (
            f"{self.label:12s} runs {self.runs:6d}  {self.runs / self.seconds:7.0f} runs/s  "
            f"child {self.child_us:6.1f} us (sys {self.child_sys_us:5.1f})  "
            f"parent {self.parent_us:5.2f} us  "
            f"script {self.script_us:5.1f} us ({self.calls:4.2f} calls)  "
            f"redis cpu {self.redis_us:6.1f} us  waits {self.waits:4.2f}"
        )


def _script_stats(conn: redis.Redis) -> tuple[int, int]:
    usec = calls = 0
    for key, value in conn.info("commandstats").items():
        if key.removeprefix("cmdstat_") in _SCRIPTS and isinstance(value, dict):
            usec += int(value.get("usec", 0))
            calls += int(value.get("calls", 0))
    return usec, calls


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return float(t.user + t.system)


def _sample(
    conn: redis.Redis, done: int, child: psutil.Process | None, parent: psutil.Process
) -> Sample:
    usec, calls = _script_stats(conn)
    cpu = conn.info("cpu")
    return Sample(
        done,
        _cpu(child),
        float(child.cpu_times().system) if child is not None else 0.0,
        _cpu(parent),
        usec,
        calls,
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        time.monotonic(),
        child.num_ctx_switches().voluntary if child is not None else 0,
    )


def run_case(
    label: str,
    code_root: Path,
    flows_dir: Path,
    server: RedisServer,
    n: int,
    skip: int,
    profile: str | None,
    handler_redis: bool = False,
) -> Result:
    conn = redis.Redis(port=server.port, socket_timeout=30)
    conn.flushall()
    conn.config_resetstat()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONPATH"] = f"{code_root}{os.pathsep}{flows_dir}"
    if profile:
        env["CHILD_COST_PROFILE"] = profile
    if handler_redis:
        env["CHILD_COST_HANDLER_REDIS"] = server.url
    subprocess.run(
        [sys.executable, "-c", ENQUEUE, server.url, PREFIX, str(n)],
        cwd=code_root,
        env=env,
        check=True,
    )
    args = [sys.executable, "-m", "redflow_supervisor", "--url", server.url, "--prefix", PREFIX]
    args += ["--app", "cc", "--procs", "1", "--module", "childcost_flows"]
    key = "{" + PREFIX + "}:runs:status:succeeded"
    with supervised(args, cwd=code_root, env=env) as sup:
        parent = psutil.Process(sup.pid)
        first = last = None
        child: psutil.Process | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if sup.poll() is not None:
                raise RuntimeError(f"the supervisor exited ({sup.returncode})")
            done = int(conn.zcard(key))
            if first is None and done >= skip:
                kids = parent.children()
                if len(kids) != 1:
                    raise RuntimeError(f"expected one child, found {len(kids)}")
                child = kids[0]
                first = _sample(conn, int(conn.zcard(key)), child, parent)
            if done >= n:
                last = _sample(conn, done, child, parent)
                break
            time.sleep(0.02)
        if first is None or last is None:
            raise RuntimeError("the drain did not finish in 600 s")
    made = int(conn.get("cc:handler") or 0)
    if made != (n if handler_redis else 0):  # the variant took effect, once a run
        raise RuntimeError(f"the handlers made {made} INCRs of their own for {n} runs")
    runs = last.done - first.done
    return Result(
        label,
        runs,
        last.t - first.t,
        (last.child - first.child) * 1e6 / runs,
        (last.child_sys - first.child_sys) * 1e6 / runs,
        (last.parent - first.parent) * 1e6 / runs,
        (last.script_usec - first.script_usec) / runs,
        (last.script_calls - first.script_calls) / runs,
        (last.redis_cpu - first.redis_cpu) * 1e6 / runs,
        (last.waits - first.waits) / runs,
    )


def export_ref(ref: str, into: Path) -> Path:
    """The tree of git ``ref`` in ``into`` (``git archive``), compiled."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _compile(root: Path) -> None:
    for pkg in ("redflow_mp", "supervisor"):
        compileall.compile_dir(str(root / pkg), quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.child_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--skip", type=float, default=0.1, help="share of runs before the window")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ref", default=None, help="git ref to measure (default: this tree)")
    ap.add_argument("--baseline", default=None, help="git ref to alternate with")
    ap.add_argument("--baseline-root", default=None, help="a tree to alternate with")
    ap.add_argument("--profile", default=os.environ.get("CHILD_COST_PROFILE"))
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--handler-redis",
        action="store_true",
        help="each handler also makes one INCR through a redis-py client of its own",
    )
    ns = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="redflow-childcost-"))
    flows_dir = tmp / "flows"
    flows_dir.mkdir()
    (flows_dir / "childcost_flows.py").write_text(FLOWS)
    roots: dict[str, Path] = {"branch": ROOT}
    if ns.ref:
        roots["branch"] = export_ref(ns.ref, tmp / "branch")
    if ns.baseline:
        roots["baseline"] = export_ref(ns.baseline, tmp / "baseline")
    elif ns.baseline_root:
        roots["baseline"] = Path(ns.baseline_root)
    for root in roots.values():
        _compile(root)
    server = RedisServer(["--save", "", "--appendonly", "no"]).start()
    skip = max(1, int(ns.runs * ns.skip))
    results: dict[str, list[Result]] = {label: [] for label in roots}
    try:
        if ns.profile:
            r = run_case(
                "profiled", ROOT, flows_dir, server, ns.runs, skip, ns.profile, ns.handler_redis
            )
            print(r.line(), flush=True)
            print(f"profile written to {ns.profile}")
            return 0
        for rep in range(ns.reps):
            order = list(roots.items())
            if rep % 2:
                order.reverse()
            for label, root in order:
                r = run_case(label, root, flows_dir, server, ns.runs, skip, None, ns.handler_redis)
                results[label].append(r)
                print(f"rep {rep + 1} {r.line()}", flush=True)
        summary = _report(results, ns.reps)
        if ns.json:
            Path(ns.json).write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _report(results: dict[str, list[Result]], reps: int) -> dict[str, Any]:
    """Print the medians (and the paired differences with a baseline); return them."""
    print(f"\nmedians of {reps} (min-max):")
    summary: dict[str, Any] = {}
    for label, rs in results.items():
        row: dict[str, Any] = {}
        names = ("child_us", "child_sys_us", "parent_us", "script_us", "calls", "redis_us", "waits")
        for name in names:
            vals = [getattr(r, name) for r in rs]
            row[name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        rates = [r.runs / r.seconds for r in rs]
        row["runs_per_s"] = {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
        }
        summary[label] = row
        print(
            f"  {label:10s} "
            + "  ".join(
                f"{k} {v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f})" for k, v in row.items()
            )
        )
    if "baseline" in results:
        # each repetition's pair ran back to back: their differences cancel
        # most of the drift of a shared machine
        print("  branch - baseline, median of the pairs (min-max):")
        for name in ("child_us", "script_us", "redis_us"):
            diffs = [
                getattr(b, name) - getattr(a, name)
                for a, b in zip(results["baseline"], results["branch"], strict=True)
            ]
            summary.setdefault("paired", {})[name] = statistics.median(diffs)
            print(
                f"    {name:10s} {statistics.median(diffs):+6.1f} "
                f"({min(diffs):+.1f} to {max(diffs):+.1f})"
            )
    return summary


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
