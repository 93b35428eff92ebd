"""Huey tasks on RedisHuey (blocking dequeue, result notification on)."""

from __future__ import annotations

import os
from typing import Any

from huey import RedisHuey

from benchmarks.tasks import common

# notify_result=True: a waiting ``result.get(blocking=True)`` is woken by a
# BLPOP on a notification key instead of polling with backoff.
huey = RedisHuey(
    common.QUEUE,
    url=common.redis_url(),
    blocking=True,
    notify_result=True,
    results=True,
    store_none=False,
    utc=True,
)


# Experiment knob (off by default): make the no-op return a value, so that
# Huey stores (and notifies) a result for every run.
NOOP_RESULT = os.environ.get("BENCH_HUEY_NOOP_RESULT") == "1"


@huey.task()
def noop() -> int | None:
    common.handler_call()
    common.count_done()
    return 1 if NOOP_RESULT else None


@huey.task()
def rt(value: int) -> int:
    common.handler_call()
    return value


@huey.task()
def cpu(iterations: int) -> None:
    common.cpu_task(iterations)


@huey.task()
def steps(count: int) -> None:
    common.by_hand_steps(count)


@huey.task()
def child(*_args: Any) -> None:
    common.count_done()


@huey.task()
def fanout(mode: str, n: int) -> None:
    """W6 parent: enqueue ``n`` children (emit) or a pipeline of ``n`` (``.then``)."""
    if mode == "emit":
        for _ in range(n):
            child()
    else:
        pipe = child.s()
        for _ in range(n - 1):
            pipe = pipe.then(child)
        huey.enqueue(pipe)
    common.mark_parent_done()
