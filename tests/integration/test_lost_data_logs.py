"""What a worker logs when the run it executes is gone from Redis (an empty
restart: Redis came back without its data), not taken over by another worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool, client_of, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def own_client(server: RedisServer, prefix: str, registry: Registry) -> Iterator[Client]:
    with client_of(server.url, prefix, registry) as c:
        yield c


def test_a_run_lost_with_redis_data_is_logged_gone_from_redis_not_lease_lost(
    server: RedisServer,
    own_client: Client,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, go = threading.Event(), threading.Event()

    @define_workflow("lost-data", queue="lost-data", registry=registry)
    def lost_data(ctx: Context[Any]) -> str:
        started.set()
        go.wait(30)
        return "done"

    pool = WorkerPool(own_client)
    try:
        with caplog.at_level(logging.WARNING, logger="redflow_mp"):
            pool.start(block_timeout=1.0)
            handle = lost_data.run(None, client=own_client)
            assert started.wait(10)
            server.kill()
            server.start()  # same port, empty
            go.set()

            def about_the_run() -> list[str]:
                return [
                    r.getMessage()
                    for r in caplog.records
                    if handle.id in r.getMessage() and r.name == "redflow_mp.worker"
                ]

            lines = wait_until(about_the_run, 20, message="the worker's line about the run")
        said = [r.getMessage() for r in caplog.records if handle.id in r.getMessage()]
        assert "gone from Redis" in lines[0], said
        assert not [x for x in said if "another worker owns it" in x], said
    finally:
        pool.stop_all()
