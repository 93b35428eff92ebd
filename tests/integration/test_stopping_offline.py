"""A worker told to stop while Redis is down and a finish is still to deliver
backs off instead of spinning (the stop event made its backoff wait return at once:
a soak's teardown logged 218,000 'Redis unreachable' lines in a few seconds)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from redflow_mp import Context, Registry, Worker, create_client, define_workflow
from tests.helpers import wait_until
from tests.redis_server import RedisServer


def test_a_stopping_worker_with_a_finish_to_deliver_does_not_spin_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer().start()
    registry = Registry()
    started, release = threading.Event(), threading.Event()

    @define_workflow("held", registry=registry)
    def held(ctx: Context[dict[str, int]]) -> int:
        started.set()
        release.wait(30)
        return 1

    client = create_client(server.url, prefix="offline-stop", registry=registry, default=False)
    worker = Worker(client, maintenance=False, block_timeout=0.1)
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        thread.start()
        handle = held.run({}, client=client)
        assert started.wait(10)
        port = server.port
        server.kill()
        caplog.set_level(logging.WARNING, logger="redflow_mp.worker")
        release.set()  # the handler returns: its finish cannot be delivered
        worker.stop()
        worker.wake()

        def unreachable() -> int:
            said = "Redis out of reach while claiming runs"
            return sum(1 for r in caplog.records if said in r.getMessage())

        # the first failed delivery, however long a loaded machine takes to get there
        wait_until(lambda: unreachable() >= 1, 20, message="the finish to fail")
        time.sleep(1.5)
        assert unreachable() == 1, unreachable()  # then one line every 10 s (outage.py)
        tries = worker._claims.count  # the attempts, whatever the log says of them
        assert tries <= 8, tries  # backoff 0.05, 0.1, 0.2, ...
        server.port = port
        server.start()  # Redis back on the same port: the finish lands, the worker ends
        thread.join(20)  # (the restarted server is empty: the finish finds no lease)
        assert not thread.is_alive()
        assert handle.id
    finally:
        release.set()
        worker.stop()
        client.close()
        server.cleanup()
