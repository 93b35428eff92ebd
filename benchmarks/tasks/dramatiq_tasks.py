"""Dramatiq actors on the Redis broker, with the Results middleware (Redis backend).

Only ``rt`` stores its result (``store_results=True``), as the Results
middleware's documentation describes.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from benchmarks.tasks import common

broker = RedisBroker(url=common.redis_url())
broker.add_middleware(Results(backend=RedisBackend(url=common.redis_url())))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def noop() -> None:
    common.handler_call()
    common.count_done()


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0, store_results=True)
def rt(value: int) -> int:
    common.handler_call()
    return value


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def cpu(iterations: int) -> None:
    common.cpu_task(iterations)


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def steps(count: int) -> None:
    common.by_hand_steps(count)


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def child() -> None:
    common.count_done()


@dramatiq.actor(queue_name=common.QUEUE, max_retries=0)
def fanout(mode: str, n: int) -> None:
    """W6 parent: a group of ``n`` children (emit) or a pipeline of ``n`` (sequential)."""
    if mode == "emit":
        dramatiq.group(child.message() for _ in range(n)).run()
    else:
        dramatiq.pipeline(child.message_with_options(pipe_ignore=True) for _ in range(n)).run()
    common.mark_parent_done()
