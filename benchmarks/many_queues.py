"""Redis cost of a claim by a worker that serves many queues.

``python -m benchmarks.many_queues [--queues 1,100,1000,5000] [--runs 2000]``

Against a private redis-server (``benchmarks.redis_server``), for each number
of queues served: ``--runs`` runs of a workflow with no concurrency limit are
enqueued either all in the first queue (``one``) or spread over every queue
(``all``), then drained by claim-only calls through ``Scripts.claim`` (the
worker's own path, queue list and all), one call at a time. Reported per
claim: Redis usec (``INFO commandstats`` of the scripts, divided by the runs
claimed) and commands (scripts and the commands they call), and runs
claimed per second of wall time (the Python side included: building and
sending the call). Then the idle claim (nothing ready) and, where the claim has
one, the scan (``scan=True``: the safety-net claim of an idle worker whose wait
timed out, which reads every queue served). Timings are noisy on a shared
machine; the Redis usec are the figure to compare.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import time

from benchmarks.redis_server import RedisServer

WORKFLOW = "bench-noop"


def _usec(r: object) -> tuple[float, int]:
    stats = r.info("commandstats")  # type: ignore[attr-defined]
    # a script's usec includes the commands it calls: count the scripts' only
    usec = sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_fcall"))
    calls = sum(v["calls"] for v in stats.values())
    return float(usec), int(calls)


def one_case(url: str, nq: int, runs: int, spread: bool) -> dict[str, float]:
    from redflow_mp import create_client
    from redflow_mp.ids import new_token

    client = create_client(url, prefix="mq", default=False)
    r = client.redis
    r.flushall()
    queues = tuple(f"tenant-{i:05d}" for i in range(nq))
    for i in range(runs):
        q = queues[i % nq] if spread else queues[0]
        client.run_by_name(WORKFLOW, {"i": i}, queue_override=q)
    r.hset(f"{{mq}}:workflow:{WORKFLOW}", "maxConcurrency", str(runs * 2))
    scripts = client.scripts
    scripts.claim(queues, 60000, new_token())  # warm: script load, any registration
    r.config_resetstat()
    u0, c0 = _usec(r)
    t0 = time.perf_counter()
    got = 1
    while True:
        _res, claimed = scripts.claim(queues, 60000, new_token())
        if claimed is None:
            break
        got += 1
    wall = time.perf_counter() - t0
    u1, c1 = _usec(r)
    claimed_n = got - 1
    out = {
        "usec": (u1 - u0) / max(1, claimed_n),
        "cmds": (c1 - c0) / max(1, claimed_n),
        "rate": claimed_n / wall,
    }
    r.config_resetstat()
    for _ in range(50):
        scripts.claim(queues, 60000, new_token())
    u2, _c2 = _usec(r)
    out["idle"] = u2 / 50
    out["scan"] = float("nan")
    if "scan" in inspect.signature(scripts.claim).parameters:  # the safety net's claim
        r.config_resetstat()
        for _ in range(50):
            scripts.claim(queues, 60000, new_token(), scan=True)
        out["scan"] = _usec(r)[0] / 50
    client.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.many_queues", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--queues", default="1,100,1000,5000")
    ap.add_argument("--runs", type=int, default=2000)
    opts = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # the unsynced workflow's warning per enqueue
    server = RedisServer()
    server.start()
    try:
        print(f"redis-server {server.version}; {opts.runs} runs; per claim")
        cols = ("queues", "runs in", "usec", "cmds", "runs/s", "idle usec", "scan usec")
        print("  " + " ".join(f"{c:>9}" for c in cols))
        for nq in (int(x) for x in opts.queues.split(",")):
            for spread in (False, True):
                if spread and nq == 1:
                    continue
                m = one_case(server.url, nq, opts.runs, spread)
                where = "all" if spread else "one"
                print(f"  {nq:>9} {where:>9} {m['usec']:9.1f} {m['cmds']:9.1f} {m['rate']:9.0f}"
                      f" {m['idle']:9.1f} {m['scan']:9.1f}")  # fmt: skip
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
