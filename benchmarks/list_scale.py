"""Listing runs at a million: what a page costs, deep in the list, with the
default settings.

``python -m benchmarks.list_scale [--runs 1000000] [--workflows 20] [--ref REF ...]``

Against a private redis-server (``benchmarks.redis_server``) a Lua loader writes
``--runs`` finished runs in batches (about 20 s for a million): each a run hash
as a finished run has it, in ``runs:created``, ``workflow-runs:<wf>`` and
``runs:status:<s>`` (one in 50 failed, the rest succeeded; ``--workflows``
workflows in turn; one millisecond apart, every 7th pair on the same
millisecond so that ties on ``createdAt`` are paged too). Then each tree (this
one, and each ``--ref``, exported with ``git archive``) lists pages of 50 in a
process of its own, one after the other on the same data: ``client.list_runs``
at shallow and deep offsets, with each filter, and the next page by cursor
where the tree has one. For each page: the wall time (median of 3), the
commands Redis ran and the Redis time they took (``INFO commandstats``: the
server's own clock, which a loaded machine inflates less than the wall).

Timings on a shared machine are indications, not claims; the command counts
and the Redis time are what the fix changes by orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.child_cost import export_ref
from benchmarks.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "scale"

# Write ARGV[4] finished runs: ids ARGV[2] .. zero-padded j (j from ARGV[3]),
# created ARGV[5] + (j - j // 7) * ARGV[7] ms (every 7th pair at the same time),
# workflow wf-(j % ARGV[6]), one in 50 failed. The hash has what a finished
# run's has (a run's steps and attempts are not read by a listing).
_LOAD = """
local tag, base, first, n, t0, nwf = ARGV[1], ARGV[2], tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local spacing = tonumber(ARGV[7])
for j = first, first + n - 1 do
  local id = base .. string.format('%09d', j)
  local wf = 'wf-' .. (j % nwf)
  local status = 'succeeded'
  if j % 50 == 0 then status = 'failed' end
  local created = t0 + (j - math.floor(j / 7)) * spacing
  local fin = created + 5
  redis.call('HSET', tag .. ':run:' .. id, 'id', id, 'workflow', wf, 'queue', 'default',
    'status', status, 'inputJson', '{"n":' .. j .. '}', 'outputJson', '"ok"',
    'attempt', '1', 'maxAttempts', '1', 'createdAt', created, 'availableAt', created,
    'startedAt', created + 1, 'finishedAt', fin, 'updatedAt', fin)
  redis.call('ZADD', tag .. ':runs:created', created, id)
  redis.call('ZADD', tag .. ':workflow-runs:' .. wf, created, id)
  redis.call('ZADD', tag .. ':runs:status:' .. status, fin, id)
end
return n
"""


def load(
    r: redis.Redis, tag: str, n: int, workflows: int, base: str = "r", spacing_ms: int = 1
) -> None:
    """``n`` finished runs under ``tag``, 10,000 per call (see ``_LOAD``), created
    ``spacing_ms`` apart up to a minute ago."""
    script = r.register_script(_LOAD)
    t0 = int(time.time() * 1000) - spacing_ms * n - 60_000
    chunk = 10_000
    for first in range(0, n, chunk):
        script(args=[tag, base, first, min(chunk, n - first), t0, workflows, spacing_ms])


# The measuring process: runs on the tree under PYTHONPATH against the loaded
# server; prints one JSON line per case.
_MEASURE = r"""
import json, statistics, sys, time
import redis
from redflow_mp import create_client, queries
url, cases = sys.argv[1], json.loads(sys.argv[2])
client = create_client(url, prefix="scale", default=False)
r = redis.Redis.from_url(url)
for label, kw in cases:
    walls, cmds, usec = [], 0, 0
    for _ in range(3):
        r.config_resetstat()
        t0 = time.perf_counter()
        try:
            runs = queries.list_runs_all(client, limit=50, **kw)
        except TypeError as exc:  # a tree without the argument
            print(json.dumps({"label": label, "error": str(exc)}), flush=True)
            break
        walls.append(time.perf_counter() - t0)
        st = r.info("commandstats")
        cmds = sum(v["calls"] for k, v in st.items() if k != "cmdstat_config")
        usec = sum(v["usec"] for k, v in st.items() if k != "cmdstat_config")
    else:
        print(json.dumps({"label": label, "runs": [x.id for x in runs][:1] + [len(runs)],
                          "wall_ms": statistics.median(walls) * 1000, "cmds": cmds,
                          "redis_ms": usec / 1000}), flush=True)
"""


def _cases(client: Any, n: int, workflows: int) -> list[tuple[str, dict[str, Any]]]:
    """Pages of 50: each filter at offset 0, half way, at 900,000 (90 % of a smaller
    one) and at the end, and the
    same deep pages by cursor (the id of the run just before, read here)."""
    per_wf = n // workflows
    filters: list[tuple[str, dict[str, Any], int]] = [
        ("all", {}, n),
        ("workflow=wf-1", {"workflow": "wf-1"}, per_wf),
        ("status=failed", {"status": "failed"}, n // 50),
        ("status=succeeded", {"status": "succeeded"}, n - n // 50),
        (
            "wf-0+failed",
            {"workflow": "wf-0", "status": "failed"},
            per_wf // 5 if workflows <= 50 else 0,
        ),
    ]
    out: list[tuple[str, dict[str, Any]]] = []
    for name, kw, size in filters:
        deep = 900_000 if size > 900_000 else size * 9 // 10
        for offset in sorted({0, size // 2, deep, max(0, size - 50)}):
            out.append((f"{name} offset {offset:,}", {**kw, "offset": offset}))
            if offset:
                (before,) = client.list_runs(limit=1, offset=offset - 1, **kw)
                out.append((f"{name} after the run at {offset - 1:,}", {**kw, "after": before.id}))
    return out


def measure(root: Path, url: str, cases: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, url, json.dumps(cases)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"the measuring process failed ({proc.returncode})")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.list_scale", description=__doc__)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--workflows", type=int, default=20)
    ap.add_argument("--ref", action="append", default=[], help="git ref to measure too")
    ns = ap.parse_args(argv)
    from redflow_mp import create_client

    server = RedisServer()
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="redflow-list-scale-"))
    try:
        r = server.client()
        t0 = time.monotonic()
        load(r, "{" + PREFIX + "}", ns.runs, ns.workflows)
        print(
            f"redis-server {server.version}: loaded {ns.runs:,} finished runs in "
            f"{time.monotonic() - t0:.1f} s ({r.info('memory')['used_memory_human']})",
            flush=True,
        )
        client = create_client(server.url, prefix=PREFIX, default=False)
        cases = _cases(client, ns.runs, ns.workflows)
        client.close()
        roots = {"this tree": ROOT}
        for ref in ns.ref:
            roots[ref] = export_ref(ref, tmp / ref.replace("/", "_"))
        results = {label: measure(root, server.url, cases) for label, root in roots.items()}
        print(f"{'page of 50':44s}" + "".join(f"{label:>34s}" for label in roots))
        for i, (case, _) in enumerate(cases):
            row = f"{case:44s}"
            for label in roots:
                got = results[label][i]
                if "error" in got:
                    row += f"{'(no such argument)':>34s}"
                else:
                    cell = (
                        f"{got['wall_ms']:.1f} ms, {got['cmds']} cmds, {got['redis_ms']:.1f} ms R"
                    )
                    row += f"{cell:>34s}"
            print(row, flush=True)
        return 0
    finally:
        server.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
