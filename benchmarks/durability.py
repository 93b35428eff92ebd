"""What ``durability = "wait"`` costs: enqueue latency and drain throughput with and
without ``WAIT 1`` behind every run-state write.

    python -m benchmarks.durability [--rounds 5] [--n 2000]

Set-up: a private redis-server (the master) and a second one replicating it
(``REPLICAOF``), both on loopback, no persistence. Each round runs both modes,
in alternating order, on a fresh prefix: ``n`` enqueues one at a time from
one thread (p50 and p99 of each call), then one in-process worker drains those
``n`` runs (a workflow with one step: claim, step write and finish are three
waited script calls per run) and the drain rate is taken. The result is the
median of the rounds with the min-max spread (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from benchmarks.redis_server import RedisServer
from benchmarks.stats import percentile
from redflow_mp import Registry, Worker, create_client, define_workflow

MODES = ("none", "wait")


def _registry() -> Registry:
    registry = Registry()

    @define_workflow("bench-durable", queue="bench-durable", registry=registry)
    def durable(ctx: Any) -> int:
        return int(ctx.step.run("one", lambda: 1))

    return registry


def one_round(url: str, mode: str, n: int, tag: str) -> dict[str, float]:
    registry = _registry()
    client = create_client(
        url, prefix=f"bench-dur-{tag}-{mode}", registry=registry, default=False, durability=mode
    )
    client.sync_registry(registry, app="bench")
    wf = registry.get("bench-durable")
    assert wf is not None
    lat = []
    for i in range(n):
        t = time.perf_counter()
        client.enqueue_workflow(wf, i)
        lat.append(time.perf_counter() - t)
    worker = Worker(client, registry=registry, block_timeout=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    while worker.runs_done < n:
        time.sleep(0.005)
    drain = time.perf_counter() - t0
    worker.stop()
    thread.join(10)
    client.close()
    lat.sort()
    return {
        "enqueue_p50_us": percentile(lat, 50) * 1e6,
        "enqueue_p99_us": percentile(lat, 99) * 1e6,
        "drain_runs_per_s": n / drain,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=2000)
    ns = ap.parse_args(argv)
    master, replica = RedisServer(), RedisServer()
    master.start()
    replica.start()
    try:
        r = replica.client()
        r.replicaof("127.0.0.1", master.port)
        deadline = time.monotonic() + 30
        while r.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not link up")
            time.sleep(0.05)
        r.close()
        results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for i in range(ns.rounds):
            for mode in MODES if i % 2 == 0 else tuple(reversed(MODES)):
                results[mode].append(one_round(master.url, mode, ns.n, f"r{i}"))
        summary: dict[str, dict[str, str]] = {}
        for mode, rounds in results.items():
            summary[mode] = {}
            for key in rounds[0]:
                values = [x[key] for x in rounds]
                summary[mode][key] = (
                    f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"
                )
        print(json.dumps({"redis": master.version, "n": ns.n, "rounds": ns.rounds, **summary}))
        for mode in MODES:
            s = summary[mode]
            print(
                f"{mode:>5}: enqueue p50 {s['enqueue_p50_us']} us, p99 {s['enqueue_p99_us']} us; "
                f"drain {s['drain_runs_per_s']} runs/s"
            )
    finally:
        replica.stop()
        master.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
