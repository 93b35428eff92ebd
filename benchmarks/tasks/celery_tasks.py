"""Celery handlers: redis broker, redis result backend, prefork pool.

Results are stored only for the round-trip task (``rt``); every other task has
``ignore_result=True`` as Celery's documentation recommends for tasks whose
return value nobody reads.
"""

from __future__ import annotations

import os

from celery import Celery, chain, group

from benchmarks.tasks import common

app = Celery("bench", broker=common.redis_url(), backend=common.redis_url())
app.conf.update(
    task_default_queue=common.QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_expires=3600,
    # Default prefetch (4 per process); early ack (the default).
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    enable_utc=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    common.handler_call()
    common.count_done()


@app.task(name="bench.rt", ignore_result=False)
def rt(value: int) -> int:
    common.handler_call()
    return value


@app.task(name="bench.cpu")
def cpu(iterations: int) -> None:
    common.cpu_task(iterations)


@app.task(name="bench.steps")
def steps(count: int) -> None:
    common.by_hand_steps(count)


@app.task(name="bench.child")
def child() -> None:
    common.count_done()


@app.task(name="bench.fanout")
def fanout(mode: str, n: int) -> None:
    """W6 parent: a group of ``n`` children (emit) or a chain of ``n`` (sequential)."""
    if mode == "emit":
        group(child.si() for _ in range(n)).apply_async()
    else:
        chain(child.si() for _ in range(n)).apply_async()
    common.mark_parent_done()
