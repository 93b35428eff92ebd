"""W4 for the async client: ``await (await wf.arun(...)).result()`` against the sync
client's ``wf.run(...).result()``, side by side.

    python -m benchmarks.aio_latency [--rounds 7] [--n 2000] [--warmup 300] [--procs 2]
    python -m benchmarks.aio_latency --commands [--rounds 5] [--n 20000]

The set-up is W4's (``benchmarks/README.md``): a private redis-server, one
``redflow-supervisor --procs 2`` serving the ``bench`` queue with the harness's
``bench-rt`` workflow (it returns its input), one client process making one
round trip at a time. Rounds alternate sync and async (the order flips every
round) in the same client process; each round reports p50 and p99 of its
round trips, and the result is the median of the rounds' figures with their
min-max spread (the machine may be shared: the spread says how much).

``--commands`` measures one command instead (``HMGET`` of a missing key, one at
a time, wall and CPU time per call): the sync client's hot path
(``Transport.call``), redis.asyncio's ``execute_command``, and the async
client's hot path (``AsyncTransport.call``): why the async client has its own
protocol for the hot calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import ManagedProcess
from benchmarks.redis_server import RedisServer
from benchmarks.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench-aio"


def _supervisor(url: str, procs: int, log: Path) -> ManagedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env.update({"BENCH_REDIS_URL": url, "BENCH_PREFIX": PREFIX, "PYTHONPATH": str(ROOT)})
    return ManagedProcess(
        [
            sys.executable,
            "-m",
            "redflow_supervisor",
            "--app",
            "bench",
            "--procs",
            str(procs),
            "--module",
            "benchmarks.tasks.redflow_tasks",
            "--url",
            url,
            "--prefix",
            PREFIX,
            "--queues",
            "bench",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=str(ROOT),
        log_path=log,
    )


def _sync_round(wf: Any, n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        wf.run({"v": i}).result(timeout=30)
        out.append((clock() - t0) * 1000.0)
    return out


async def _async_round(wf: Any, n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        await (await wf.arun({"v": i})).result(timeout=30)
        out.append((clock() - t0) * 1000.0)
    return out


def _commands(url: str, rounds: int, n: int) -> None:
    import redis.asyncio

    from redflow_mp.aio_transport import AsyncTransport
    from redflow_mp.transport import Transport

    args = ("HMGET", "bench-aio:missing", "a", "b")
    sync = Transport(url)
    areds = redis.asyncio.Redis.from_url(url)
    atrans = AsyncTransport(url)
    loop = asyncio.new_event_loop()

    def timed(fn: Any) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return (time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6

    def run_sync() -> None:
        for _ in range(n):
            sync.call(*args)

    async def run_redis_asyncio() -> None:
        send: Any = areds.execute_command  # untyped in redis-py
        for _ in range(n):
            await send(*args)

    async def run_ours() -> None:
        for _ in range(n):
            await atrans.call(*args)

    paths = {
        "sync Transport.call": run_sync,
        "redis.asyncio execute_command": lambda: loop.run_until_complete(run_redis_asyncio()),
        "async AsyncTransport.call": lambda: loop.run_until_complete(run_ours()),
    }
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for fn in paths.values():  # warm up: connect, fill caches
        timed(fn)
    for _ in range(rounds):
        for name, fn in paths.items():
            got[name].append(timed(fn))
    print(f"one HMGET at a time, {rounds} rounds of {n}, median (min-max) per call in us:")
    for name, values in got.items():
        wall = _spread([w for w, _ in values], 1)
        cpu = _spread([c for _, c in values], 1)
        print(f"  {name:<30} wall {wall}   cpu {cpu}")
    loop.run_until_complete(areds.aclose())
    loop.run_until_complete(atrans.aclose())
    loop.close()
    sync.close()


def _spread(values: list[float], digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.aio_latency", description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=2000, help="round trips per round")
    ap.add_argument("--warmup", type=int, default=300, help="round trips before the rounds")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--commands", action="store_true", help="per-command cost instead of W4")
    args = ap.parse_args(argv)

    server = RedisServer()
    server.start()
    if args.commands:
        try:
            _commands(server.url, args.rounds, args.n)
        finally:
            server.stop()
        return 0
    sup = _supervisor(server.url, args.procs, server.workdir / "supervisor.log")
    try:
        os.environ["BENCH_REDIS_URL"] = server.url
        os.environ["BENCH_PREFIX"] = PREFIX
        from benchmarks.tasks import redflow_tasks
        from redflow_mp import create_client
        from redflow_mp.aio import create_async_client

        client = create_client(server.url, prefix=PREFIX)
        deadline = time.monotonic() + 30
        while client.get_workflow_meta("bench-rt") is None:  # the supervisor has synced
            if time.monotonic() > deadline or not sup.alive():
                raise RuntimeError(f"supervisor did not start: {sup.log_tail(20)}")
            time.sleep(0.05)
        wf = redflow_tasks.rt
        loop = asyncio.new_event_loop()
        aclient = create_async_client(server.url, prefix=PREFIX)
        _sync_round(wf, args.warmup)
        loop.run_until_complete(_async_round(wf, args.warmup))
        rows: dict[str, dict[str, list[float]]] = {
            "sync": {"p50": [], "p99": []},
            "async": {"p50": [], "p99": []},
        }
        for r in range(args.rounds):
            order = ("sync", "async") if r % 2 == 0 else ("async", "sync")
            for kind in order:
                if kind == "sync":
                    lat = _sync_round(wf, args.n)
                else:
                    lat = loop.run_until_complete(_async_round(wf, args.n))
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                rows[kind]["p50"].append(p50)
                rows[kind]["p99"].append(p99)
                print(f"round {r + 1} {kind:<5} p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)
        loop.run_until_complete(aclient.aclose())
        loop.close()
        client.close()
    finally:
        sup.stop(grace=10.0)
        server.stop()
    ratio = [a / s for a, s in zip(rows["async"]["p50"], rows["sync"]["p50"], strict=True)]
    print(f"\nW4 round trip, {args.rounds} rounds of {args.n}, median (min-max) over rounds:")
    for kind in ("sync", "async"):
        mid, tail = _spread(rows[kind]["p50"]), _spread(rows[kind]["p99"])
        print(f"  {kind:<5}  p50 {mid} ms   p99 {tail} ms")
    print(f"  async/sync p50 per round: {_spread(ratio)}")
    if args.json:
        print(json.dumps({**rows, "ratio_p50": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
