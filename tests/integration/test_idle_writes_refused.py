"""A worker idle on its queues' bells while Redis accepts no writes for a while
(``min-replicas-to-write`` unmet: a replica down; a failed save with
``stop-writes-on-bgsave-error``; a master demoted to a replica): its BLPOP is a
write and is refused (``NOREPLICAS``, ``MISCONF``, ``READONLY``). The worker
waits it out like an outage. It raised instead: a supervisor's child exited, was
restarted, exited again, and the supervisor went FATAL during a replica outage."""

from __future__ import annotations

import pytest
import redis

from redflow_mp import Client, Registry
from redflow_mp.worker import Worker

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("name", "refusing", "normal"),
    [("min-replicas-to-write", "1", "0")],
    ids=["noreplicas"],
)
def test_an_idle_workers_wait_refused_for_writes_is_waited_out(
    client: Client, registry: Registry, raw: redis.Redis, name: str, refusing: str, normal: str
) -> None:
    """The idle wait itself (``Worker._wait``: its BLPOP), met by the refusal: a
    whole worker meets it only when the refusal begins between a claim and the
    next wait (once in a CI run)."""
    worker = Worker(client, registry=registry, queues=["q"], block_timeout=0.1)
    raw.config_set(name, refusing)
    try:
        worker._wait()  # before: ResponseError: NOREPLICAS Not enough good replicas to write.
        worker._wait()
    finally:
        raw.config_set(name, normal)
        worker.stop()
    worker._wait()  # and it goes on
