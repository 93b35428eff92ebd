"""RQ jobs (plain functions; the enqueuer refers to them by import path)."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from benchmarks.tasks import common


def noop() -> None:
    common.handler_call()
    common.count_done()


def rt(value: int) -> int:
    common.handler_call()
    return value


def cpu(iterations: int) -> None:
    common.cpu_task(iterations)


def steps(count: int) -> None:
    common.by_hand_steps(count)


def child() -> None:
    common.count_done()


def queue() -> Queue:
    return Queue(common.QUEUE, connection=Redis.from_url(common.redis_url()))


def fanout(mode: str, n: int) -> None:
    """W6 parent: enqueue ``n`` children (emit) or a ``depends_on`` chain of ``n``."""
    q = queue()
    if mode == "emit":
        for _ in range(n):
            q.enqueue(child, result_ttl=0)
    else:
        previous = None
        for _ in range(n):
            previous = q.enqueue(child, depends_on=previous)
    common.mark_parent_done()
