"""What every system's handlers share: configuration from the environment, the
benchmark counter, the CPU burner and the by-hand "steps" of the peers.

Worker processes import this module (through ``benchmarks.tasks.<system>_tasks``)
with ``BENCH_REDIS_URL`` set by the harness. Connections are opened lazily and
re-opened after a fork, so pre-forking pools (Celery prefork, Huey process
workers, the redflow supervisor) never share a socket between processes.
"""

from __future__ import annotations

import os
import time

import redis

#: Environment variables the harness sets for workers and clients.
ENV_URL = "BENCH_REDIS_URL"
ENV_PREFIX = "BENCH_PREFIX"

#: Keys of the benchmark itself (never a system's own keys).
COUNTER_KEY = "bm:done"  # INCR by every handler that counts as "one run done"
PARENT_KEY = "bm:parent"  # set by a fan-out parent when it has finished
CPU_TIMES_KEY = "bm:cpu"  # "start end" wall-clock pairs of W3 handlers
STEPS_US_KEY = "bm:steps_us"  # per-run microseconds spent in the 20 steps (W5)
STEP_KEY_PREFIX = "bm:step:"  # keys the peers write by hand as their "steps"
HANDLER_KEY = "bm:handler"  # INCR by every handler in the handler-redis variant
BENCH_KEYS = (COUNTER_KEY, PARENT_KEY, CPU_TIMES_KEY, STEPS_US_KEY, HANDLER_KEY)

#: Set to "1" by the harness for the handler-redis variant: every handler also
#: makes one Redis call of its own (an INCR of HANDLER_KEY), as real handlers do.
ENV_HANDLER_REDIS = "BENCH_HANDLER_REDIS"

QUEUE = "bench"


def redis_url() -> str:
    url = os.environ.get(ENV_URL)
    if not url:
        raise RuntimeError(f"{ENV_URL} is not set (the benchmark harness sets it)")
    return url


def prefix() -> str:
    return os.environ.get(ENV_PREFIX, "bench")


_conn: redis.Redis | None = None
_conn_pid = -1


def conn() -> redis.Redis:
    """A per-process synchronous connection to the benchmark's Redis."""
    global _conn, _conn_pid
    pid = os.getpid()
    if _conn is None or _conn_pid != pid:
        _conn = redis.Redis.from_url(redis_url())
        _conn_pid = pid
    return _conn


def handler_redis() -> bool:
    """Whether handlers make their own Redis call (the handler-redis variant)."""
    return os.environ.get(ENV_HANDLER_REDIS) == "1"


HANDLER_REDIS = handler_redis()


def handler_call() -> None:
    """The handler's own Redis call in the handler-redis variant (else nothing).

    One INCR on the benchmark's Redis through the redis-py client the handlers
    of the synchronous systems use (arq's handlers use the worker's own async
    client instead). The harness checks afterwards that the counter equals the
    number of runs, so a variant that did not take effect cannot go unnoticed.
    """
    if HANDLER_REDIS:
        conn().incr(HANDLER_KEY)


def count_done() -> None:
    """The one Redis write every benchmark handler makes: INCR of the counter."""
    conn().incr(COUNTER_KEY)


def mark_parent_done() -> None:
    conn().set(PARENT_KEY, "1")


def burn(iterations: int) -> int:
    """Pure-Python CPU work, about linear in ``iterations``."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def record_cpu(start: float, end: float) -> None:
    """Store one W3 handler's wall-clock interval and count it done."""
    pipe = conn().pipeline(transaction=False)
    pipe.rpush(CPU_TIMES_KEY, f"{start:.6f} {end:.6f}")
    pipe.incr(COUNTER_KEY)
    pipe.execute()


def cpu_task(iterations: int) -> int:
    handler_call()
    start = time.time()
    value = burn(iterations)
    record_cpu(start, time.time())
    return value


def record_steps(elapsed_s: float) -> None:
    """Store the time one W5 run spent in its steps and count it done."""
    pipe = conn().pipeline(transaction=False)
    pipe.rpush(STEPS_US_KEY, f"{elapsed_s * 1e6:.1f}")
    pipe.incr(COUNTER_KEY)
    pipe.execute()


def by_hand_steps(steps: int) -> None:
    """The peers' nearest equivalent of ``steps`` durable steps: one SET per step.

    Each "step" persists a small result under a key unique to this run, which is
    what a durable step minimally costs (one round trip). No replay logic.
    """
    r = conn()
    run = os.urandom(8).hex()
    start = time.perf_counter()
    for i in range(steps):
        r.set(f"{STEP_KEY_PREFIX}{run}:{i}", b'{"ok":true}')
    record_steps(time.perf_counter() - start)
