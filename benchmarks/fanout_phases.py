"""The largest single Redis call in each phase of a big fan-out's life (issue:
suspend11): enqueue of the children, the parent's suspend, each child's finish
(waking the parent), the parent's replay reading the outcomes, retention of the
finished family. Run: ``python -m benchmarks.fanout_phases [children]``.

A private redis-server (tests/redis_server.py), default settings, two Worker
threads in this process. Every call over 0.5 ms is logged (SLOWLOG); each entry's
duration (µs, wall time of the command inside Redis) is attributed to its script
by SHA, and each phase's Redis CPU (INFO cpu) is reported too.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import redis

from benchmarks.fanout_app import start_fanout, sweep_all
from tests.helpers import WorkerPool, server_cpu_ms


def main(n: int) -> None:
    app = start_fanout()
    server, raw, client, parent = app.server, app.raw, app.client, app.parent
    client.scripts.ensure_loaded()
    names = {sha: name for name, sha in client.scripts._shas.items()}
    raw.config_set("slowlog-max-len", 2_000_000)
    raw.config_set("slowlog-log-slower-than", 500)  # µs: the large calls only
    raw.slowlog_reset()
    phases: list[tuple[str, float, float]] = []
    t0, c0 = time.monotonic(), server_cpu_ms(raw)
    pool = WorkerPool(client)
    for _ in range(2):
        pool.start()
    handle = parent.run(n)
    print("result", handle.result(timeout=3600), flush=True)
    pool.stop_all(60)
    phases.append(("run", time.monotonic() - t0, server_cpu_ms(raw) - c0))
    life = _entries(raw, names)
    raw.slowlog_reset()
    time.sleep(0.05)
    c1 = server_cpu_ms(raw)
    removed = sweep_all(client)
    phases.append(("retention", 0.0, server_cpu_ms(raw) - c1))
    sweep = _entries(raw, names)
    print("removed", removed)
    for label, entries in (("life", life), ("retention", sweep)):
        top: dict[str, tuple[int, int, int]] = {}
        total: dict[str, int] = defaultdict(int)
        for name, us, argc in entries:
            total[name] += us
            if name not in top or us > top[name][0]:
                top[name] = (us, argc, top.get(name, (0, 0, 0))[2] + 1)
            else:
                top[name] = (top[name][0], top[name][1], top[name][2] + 1)
        print(f"== {label}: max single call per command/script (µs), calls, total ms")
        for name, (us, argc, calls) in sorted(top.items(), key=lambda x: -x[1][0])[:14]:
            ms = total[name] / 1000
            print(f"  {name:24s} max {us:8d} µs argc {argc:5d} calls {calls:7d} total {ms:8.1f} ms")
    for label, wall, cpu in phases:
        print(f"phase {label}: wall {wall:.1f} s, Redis CPU {cpu:.0f} ms")
    server.stop()


def _entries(raw: redis.Redis, names: dict[str, str]) -> list[tuple[str, int, int]]:
    out = []
    for e in raw.slowlog_get(2_000_000):
        cmd = e["command"]
        parts = cmd.split(b" ") if isinstance(cmd, bytes) else str(cmd).split(" ")
        head = parts[0].decode() if isinstance(parts[0], bytes) else parts[0]
        name = head.upper()
        if name == "EVALSHA" and len(parts) > 1:
            sha = parts[1].decode() if isinstance(parts[1], bytes) else parts[1]
            name = names.get(sha, sha[:8])
        argc = e.get("complexity") or len(parts)
        out.append((name, int(e["duration"]), int(argc) if isinstance(argc, int) else len(parts)))
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
