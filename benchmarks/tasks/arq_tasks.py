"""arq jobs and ``WorkerSettings`` (one asyncio worker per OS process).

The worker polls its queue every ``BENCH_ARQ_POLL_DELAY`` seconds (default
0.001, the "1 ms polling" configuration), runs at most ``BENCH_ARQ_MAX_JOBS``
jobs at a time per process (default 1: one handler at a time per process, the
parallelism every other system gets; arq's own default of 10 concurrent jobs
per event loop gives the same W1 throughput here, because the worker is
CPU-bound, but it would make the in-handler W5 timing include other jobs'
turns on the event loop) and keeps results only for ``rt``.
The handlers use the worker's own async Redis connection (``ctx["redis"]``) for
the benchmark counter so they never block the event loop on I/O.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from arq import ArqRedis
from arq.connections import RedisSettings
from arq.jobs import Job, ResultNotFound
from arq.worker import Function, func

from benchmarks.tasks import common

POLL_DELAY = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.001"))
MAX_JOBS = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "1"))

#: Passed to the arq CLI as ``--custom-log-dict``: no per-job log lines.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"arq.standard": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["arq.standard"], "level": "WARNING"}},
}


def _redis(ctx: dict[str, Any]) -> ArqRedis:
    redis: ArqRedis = ctx["redis"]
    return redis


async def wait_result(job: Job) -> Any:
    """``job.result()``, asked twice if arq 0.25 reports a just-finished job as missing.

    ``Job.result`` reads the result key and then the queue with two separate
    commands; a job that finishes in between looks "not found". The second
    call reads the stored result.
    """
    try:
        return await job.result(timeout=60, poll_delay=POLL_DELAY)
    except ResultNotFound:
        return await job.result(timeout=60, poll_delay=POLL_DELAY)


async def handler_call(ctx: dict[str, Any]) -> None:
    """The handler's own Redis call in the handler-redis variant (see common.handler_call)."""
    if common.HANDLER_REDIS:
        await _redis(ctx).incr(common.HANDLER_KEY)


async def noop(ctx: dict[str, Any]) -> None:
    await handler_call(ctx)
    await _redis(ctx).incr(common.COUNTER_KEY)


async def rt(ctx: dict[str, Any], value: int) -> int:
    await handler_call(ctx)
    return value


async def cpu(ctx: dict[str, Any], iterations: int) -> None:
    await handler_call(ctx)
    start = time.time()
    common.burn(iterations)  # blocks the event loop, as CPU work in arq does
    end = time.time()
    pipe = _redis(ctx).pipeline(transaction=False)
    pipe.rpush(common.CPU_TIMES_KEY, f"{start:.6f} {end:.6f}")
    pipe.incr(common.COUNTER_KEY)
    await pipe.execute()


async def steps(ctx: dict[str, Any], count: int) -> None:
    redis = _redis(ctx)
    run = os.urandom(8).hex()
    start = time.perf_counter()
    for i in range(count):
        await redis.set(f"{common.STEP_KEY_PREFIX}{run}:{i}", b'{"ok":true}')
    elapsed = time.perf_counter() - start
    pipe = redis.pipeline(transaction=False)
    pipe.rpush(common.STEPS_US_KEY, f"{elapsed * 1e6:.1f}")
    pipe.incr(common.COUNTER_KEY)
    await pipe.execute()


async def child(ctx: dict[str, Any]) -> None:
    await _redis(ctx).incr(common.COUNTER_KEY)


async def child_rt(ctx: dict[str, Any]) -> None:
    await _redis(ctx).incr(common.COUNTER_KEY)


async def fanout(ctx: dict[str, Any], mode: str, n: int) -> None:
    """W6 parent: enqueue ``n`` children (emit), or enqueue and await each in turn."""
    redis = _redis(ctx)
    if mode == "emit":
        for _ in range(n):
            await redis.enqueue_job("child")
    else:
        for _ in range(n):
            job = await redis.enqueue_job("child_rt")
            if job is None:
                raise RuntimeError("arq refused to enqueue a child")
            await wait_result(job)
    await redis.set(common.PARENT_KEY, "1")


FUNCTIONS: list[Function] = [
    func(noop, keep_result=0),
    func(rt),
    func(cpu, keep_result=0),
    func(steps, keep_result=0),
    func(child, keep_result=0),
    func(child_rt),
    func(fanout, keep_result=0),
]


class WorkerSettings:
    functions: ClassVar[list[Function]] = FUNCTIONS
    redis_settings: ClassVar[RedisSettings] = RedisSettings.from_dsn(
        os.environ.get(common.ENV_URL, "redis://127.0.0.1:1/0")
    )
    poll_delay: ClassVar[float] = POLL_DELAY
    max_jobs: ClassVar[int] = MAX_JOBS
    keep_result: ClassVar[int] = 3600
    max_tries: ClassVar[int] = 1
    log_results: ClassVar[bool] = False
