"""Redis CPU per run with ``shards``: a drain on a local 3-master cluster.

``python -m benchmarks.shards [--runs 6000] [--procs 2] [--reps 2] [--baseline main]``

Starts its own 3-master Redis Cluster (``tests/servers.py``: ``redis-server
--cluster-enabled yes`` x3, slots split evenly) and its own single redis-server,
on free loopback ports. Each case, from ``FLUSHALL``: a client process enqueues
``--runs`` runs of 12 no-op workflows (4 placed in each of 3 shards, so the
same workflows serve every case), workers stopped; then one
``redflow-supervisor --procs N`` drains them. Around the case every master is
read (``INFO cpu``, ``INFO commandstats``), and what each master did is
reported per run:

* ``script usec/run``: the ``usec`` of the script calls (``commandstats``
  ``evalsha`` / ``fcall``: every state transition, their inner commands
  included; Redis 7 also counts the inner commands on their own lines, so those
  are not added again; plain commands such as ``BLPOP`` on the bells are left
  out);
* ``cpu us/run``: ``used_cpu_sys + used_cpu_user``, less the node's idle rate
  (measured for 2 s before the cases) times the case's duration.

The share of the busiest master (of the cluster's total) is the figure of
issue 14 (target <= 40 % with 3 shards). Cases: ``cluster, shards=3``;
``cluster, shards=1``; ``single, shards=1``; with ``--baseline REF`` also the
last two on the code of git ref REF (``git archive`` into a temporary directory:
the single-shard cost against the main branch, target within 10 %). Cases are
interleaved per repetition; medians are printed (and written with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.child_cost import export_ref  # noqa: E402
from benchmarks.supervised import supervised  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.servers import Cluster  # noqa: E402

FLOWS = """
from redflow_mp import define_workflow

NAMES = {names!r}

def _noop(ctx):
    return None

for _name in NAMES:
    define_workflow(_name, queue="sb", max_concurrency=100000)(_noop)
"""

ENQUEUE = """
import sys
import shardbench_flows  # registers the workflows: runs take their queue from them
from redflow_mp import create_client
url, prefix, shards, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names = sys.argv[5].split(",")
extra = {"shards": shards} if shards != 1 else {}
c = create_client(url, prefix=prefix, default=False, **extra)
for i in range(n):
    c.run_by_name(names[i % len(names)], i)
c.close()
"""

_SCRIPTS = {"evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro"}


def workflow_names(per_shard: int = 4, shards: int = 3) -> list[str]:
    """``per_shard`` names in each shard (crc32 placement, as ``shards.py``)."""
    out: list[str] = []
    for k in range(shards):
        out += [n for i in range(1000) if zlib.crc32((n := f"sb{i}").encode()) % shards == k][
            :per_shard
        ]
    return out


@dataclass
class Node:
    port: int
    conn: redis.Redis

    def sample(self) -> tuple[float, int]:
        cpu = self.conn.info("cpu")
        stats = self.conn.info("commandstats")
        usec = 0
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            if name in _SCRIPTS and isinstance(value, dict):
                usec += int(value.get("usec", 0))
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), usec


@dataclass
class CaseResult:
    case: str
    runs: int
    seconds: float
    usec_per_run: dict[int, float] = field(default_factory=dict)
    cpu_us_per_run: dict[int, float] = field(default_factory=dict)

    @property
    def total_usec(self) -> float:
        return sum(self.usec_per_run.values())

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu_us_per_run.values())

    def busiest_share(self) -> tuple[float, float]:
        u, c = self.total_usec, self.total_cpu
        return (
            max(self.usec_per_run.values()) / u if u else 0.0,
            max(self.cpu_us_per_run.values()) / c if c > 0 else 0.0,
        )


def idle_rates(nodes: list[Node], seconds: float = 2.0) -> dict[int, float]:
    before = {n.port: n.sample()[0] for n in nodes}
    time.sleep(seconds)
    return {n.port: (n.sample()[0] - before[n.port]) / seconds for n in nodes}


def run_case(
    *,
    case: str,
    code_root: Path,
    flows_dir: Path,
    url: str,
    nodes: list[Node],
    idle: dict[int, float],
    prefix: str,
    shards: int,
    runs: int,
    procs: int,
    names: list[str],
    cluster: bool,
) -> CaseResult:
    for node in nodes:
        node.conn.flushall()
        node.conn.config_resetstat()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONPATH"] = f"{code_root}{os.pathsep}{flows_dir}"
    before = {n.port: n.sample() for n in nodes}
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", ENQUEUE, url, prefix, str(shards), str(runs), ",".join(names)],
        cwd=code_root,
        env=env,
        check=True,
    )
    args = [sys.executable, "-m", "redflow_supervisor", "--url", url, "--prefix", prefix]
    args += ["--app", "bench", "--procs", str(procs), "--module", "shardbench_flows"]
    if shards != 1:
        args += ["--shards", str(shards)]
    if cluster:
        args += ["--cluster"]
    with supervised(args, cwd=code_root, env=env) as sup:
        _wait_done(nodes, prefix, shards, runs, sup)
    seconds = time.monotonic() - t0
    result = CaseResult(case, runs, seconds)
    for node in nodes:
        cpu0, usec0 = before[node.port]
        cpu1, usec1 = node.sample()
        result.usec_per_run[node.port] = (usec1 - usec0) / runs
        busy = max(0.0, (cpu1 - cpu0) - idle.get(node.port, 0.0) * seconds)
        result.cpu_us_per_run[node.port] = busy * 1e6 / runs
    return result


def _tags(prefix: str, shards: int) -> list[str]:
    if shards == 1:
        return ["{" + prefix + "}"]
    from redflow_mp.shards import shard_tags

    return list(shard_tags(prefix, shards))


def _wait_done(
    nodes: list[Node], prefix: str, shards: int, runs: int, sup: subprocess.Popen[bytes]
) -> None:
    tags = _tags(prefix, shards)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if sup.poll() is not None:
            raise RuntimeError(f"the supervisor exited ({sup.returncode})")
        done = 0
        for tag in tags:
            for node in nodes:
                try:
                    done += int(node.conn.zcard(f"{tag}:runs:status:succeeded"))
                except redis.ResponseError:  # MOVED: not this node's slot
                    continue
        if done >= runs:
            return
        time.sleep(0.05)
    raise RuntimeError("the drain did not finish in 180 s")


def spread_prefix(cluster: Cluster, base: str, shards: int) -> str:
    from redflow_mp.shards import shard_tags

    for i in range(500):
        p = f"{base}{i}"
        ports = {
            cluster.node_for_slot(key_slot(t[1:-1].encode())).port for t in shard_tags(p, shards)
        }
        if len(ports) == shards:
            return p
    raise RuntimeError("no prefix spreads over the masters")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__)
    ap.add_argument("--runs", type=int, default=6000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--baseline", default=None, help="git ref to compare the one-shard cost to")
    ap.add_argument("--json", default=None)
    ns = ap.parse_args(argv)
    # a TERM/HUP unwinds like Ctrl-C, so the finally below stops the servers
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    names = workflow_names()
    tmp = Path(tempfile.mkdtemp(prefix="redflow-shardbench-"))
    flows_dir = tmp / "flows"
    flows_dir.mkdir()
    (flows_dir / "shardbench_flows.py").write_text(FLOWS.format(names=names))
    roots = {"": ROOT}
    if ns.baseline:
        roots[f" ({ns.baseline})"] = export_ref(ns.baseline, tmp / "baseline")
    cluster = Cluster().start()
    single = RedisServer(["--save", "", "--appendonly", "no"]).start()
    try:
        cnodes = [
            Node(m.port, redis.Redis(port=m.port, socket_timeout=30)) for m in cluster.masters
        ]
        snode = [Node(single.port, redis.Redis(port=single.port, socket_timeout=30))]
        idle = idle_rates(cnodes + snode)
        prefix3 = spread_prefix(cluster, "sb", 3)
        cases: list[tuple[str, dict[str, Any]]] = []
        common = {"flows_dir": flows_dir, "idle": idle, "runs": ns.runs, "procs": ns.procs}
        common["names"] = names
        cases.append(
            (
                "cluster, shards=3",
                {
                    "code_root": ROOT,
                    "url": cluster.url,
                    "nodes": cnodes,
                    "prefix": prefix3,
                    "shards": 3,
                    "cluster": True,
                },
            )
        )
        for label, root in roots.items():
            cases.append(
                (
                    f"cluster, shards=1{label}",
                    {
                        "code_root": root,
                        "url": cluster.url,
                        "nodes": cnodes,
                        "prefix": prefix3,
                        "shards": 1,
                        "cluster": True,
                    },
                )
            )
            cases.append(
                (
                    f"single, shards=1{label}",
                    {
                        "code_root": root,
                        "url": single.url,
                        "nodes": snode,
                        "prefix": prefix3,
                        "shards": 1,
                        "cluster": False,
                    },
                )
            )
        results: dict[str, list[CaseResult]] = {c: [] for c, _ in cases}
        for rep in range(ns.reps):
            for case, kw in cases:
                r = run_case(case=case, **common, **kw)
                results[case].append(r)
                share_u, share_c = r.busiest_share()
                print(
                    f"rep {rep + 1} {case:32s} {r.seconds:6.1f}s  usec/run {r.total_usec:6.1f} "
                    f"(busiest {share_u:5.1%})  cpu us/run {r.total_cpu:6.1f} "
                    f"(busiest {share_c:5.1%})  per master usec "
                    + " ".join(f"{v:5.1f}" for v in r.usec_per_run.values()),
                    flush=True,
                )
        summary = _summary(results)
        print("\nmedians:")
        for row in summary:
            print(
                f"  {row['case']:32s} usec/run {row['usec_per_run']:6.1f}  busiest "
                f"{row['busiest_usec_share']:5.1%}  cpu us/run {row['cpu_us_per_run']:6.1f}  "
                f"busiest {row['busiest_cpu_share']:5.1%}  per master usec {row['per_master_usec']}"
            )
        if ns.json:
            Path(ns.json).write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        cluster.stop()
        single.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _summary(results: dict[str, list[CaseResult]]) -> list[dict[str, Any]]:
    out = []
    for case, rs in results.items():
        if not rs:
            continue
        per_master = {
            port: round(statistics.median(r.usec_per_run[port] for r in rs), 1)
            for port in rs[0].usec_per_run
        }
        out.append(
            {
                "case": case,
                "reps": len(rs),
                "runs": rs[0].runs,
                "usec_per_run": statistics.median(r.total_usec for r in rs),
                "cpu_us_per_run": statistics.median(r.total_cpu for r in rs),
                "busiest_usec_share": statistics.median(r.busiest_share()[0] for r in rs),
                "busiest_cpu_share": statistics.median(r.busiest_share()[1] for r in rs),
                "per_master_usec": list(per_master.values()),
                "seconds": statistics.median(r.seconds for r in rs),
            }
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
