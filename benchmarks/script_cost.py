"""Redis time of one call of each hot script, without the noise of a shared machine.

``python -m benchmarks.script_cost [--calls 4000] [--batch 200] [--reps 2]``

Against a private redis-server (``benchmarks.redis_server``): ``enqueue_run``
one run at a time, ``claim_run`` claiming only, ``claim_run`` finishing only
(``succeeded``, the steady state's other half), and ``enqueue_runs`` in chunks
of 500, each sent pipelined in batches of ``--batch`` calls, once as
``EVALSHA`` and once as ``FCALL`` of the function library (``redis_functions``).
Each figure is ``INFO commandstats`` usec per call of the batch with the lowest
mean, over ``--reps`` repetitions: a batch that another program preempted only
ever reads higher, so the minimum is the script's own cost. A worker's
steady-state call (finish + claim) costs about claim + finish minus one
script set-up. Called one at a time, as a worker does, each call costs more
(cold caches after every wake-up of the server): ``python -m benchmarks run``
measures that.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.redis_server import RedisServer

TAG = "{bench}"
WORKFLOW = "bench-noop"
QUEUE = "bench"


def _min_usec(
    r: redis.Redis, calls: list[tuple[Any, ...]], batch: int, stat: str
) -> tuple[float, list[Any]]:
    best, replies = float("inf"), []
    for i in range(0, len(calls), batch):
        r.config_resetstat()
        pipe = r.pipeline(transaction=False)
        for call in calls[i : i + batch]:
            pipe.execute_command(*call)
        replies += pipe.execute()
        st = r.info("commandstats")[f"cmdstat_{stat}"]
        best = min(best, st["usec"] / st["calls"])
    return best, replies


def _enqueue_args(run_id: str) -> tuple[Any, ...]:
    # enqueue_run's arguments as the client sends them for a plain run: tag, id,
    # workflow, queue, input, attempts, maxConcurrency (an older tree's script,
    # with its 15 arguments in another order, is measured by that tree's copy)
    return (1, "k", TAG, run_id, WORKFLOW, QUEUE, "{}", 1, "100000")


def _claim_args(token: str, finish: tuple[str, str, str, str]) -> tuple[Any, ...]:
    mode, run_id, held, payload = finish
    return (1, f"{TAG}:q:{QUEUE}:ready", TAG, 60000, token, mode, run_id, held, payload, 0, "", "",
            1, QUEUE)  # fmt: skip


def measure(r: redis.Redis, call: Callable[[str], tuple[Any, ...]], stat: str, n: int,
            batch: int) -> dict[str, float]:  # fmt: skip
    """One repetition: Redis usec per call of each script (``call(name)`` is its prefix)."""
    out: dict[str, float] = {}
    out["enqueue_run"], _ = _min_usec(
        r, [(*call("enqueue_run"), *_enqueue_args(uuid.uuid4().hex)) for _ in range(n)], batch, stat
    )
    tokens = [uuid.uuid4().hex for _ in range(n)]
    claims = [(*call("claim_run"), *_claim_args(t, ("", "", "", ""))) for t in tokens]
    out["claim_run (claim)"], replies = _min_usec(r, claims, batch, stat)
    ids = [reply[1][0].decode() for reply in replies]
    finishes = [
        (*call("claim_run"), *_claim_args("", ("succeeded", i, t, "null")))
        for i, t in zip(ids, tokens, strict=True)
    ]
    out["claim_run (finish)"], replies = _min_usec(r, finishes, batch, stat)
    if any(reply[0] != b"succeeded" for reply in replies):
        raise RuntimeError(f"a finish was refused: {replies[:2]!r}")
    best = float("inf")
    for _ in range(10):
        args: list[Any] = [TAG, WORKFLOW, QUEUE, 1, 0, 0, "", "100000", "", 0]
        for _ in range(500):
            args += [uuid.uuid4().hex, "{}", ""]
        r.config_resetstat()
        r.execute_command(*call("enqueue_runs"), 1, "k", *args)
        st = r.info("commandstats")[f"cmdstat_{stat}"]
        best = min(best, st["usec"] / 500)
    out["enqueue_runs (per run)"] = best
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.script_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--reps", type=int, default=2)
    opts = ap.parse_args(argv)
    from redflow_mp.scripts import _read_lua, build_library, load_sources

    server = RedisServer()
    server.start()
    try:
        r = server.client()
        version = tuple(int(p) for p in str(r.info("server")["redis_version"]).split(".")[:3])
        sources = load_sources(version)
        library, names = build_library(*_read_lua())
        results: dict[str, dict[str, float]] = {}
        for mode in ("evalsha", "fcall"):
            for _ in range(opts.reps):
                r.flushall()
                r.function_flush()
                if mode == "evalsha":
                    shas = {n: r.script_load(sources[n]) for n in sources}

                    def call(name: str, shas: dict[str, str] = shas) -> tuple[Any, ...]:
                        return ("EVALSHA", shas[name])
                else:
                    r.function_load(library, replace=True)

                    def call(name: str) -> tuple[Any, ...]:
                        return ("FCALL", names[name])

                for name, usec in measure(r, call, mode, opts.calls, opts.batch).items():
                    got = results.setdefault(name, {})
                    got[mode] = min(got.get(mode, float("inf")), usec)
        print(f"redis-server {'.'.join(map(str, version))}; Redis usec per call (min over batches)")
        print(f"  {'script':24} {'EVALSHA':>8} {'FCALL':>8}")
        for name, by_mode in results.items():
            print(f"  {name:24} {by_mode['evalsha']:8.1f} {by_mode['fcall']:8.1f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
