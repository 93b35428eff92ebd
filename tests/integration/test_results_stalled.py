"""``RunHandle.result(timeout=...)`` keeps its timeout while Redis does not answer.

The server is a private ``redis-server`` stopped with SIGSTOP (it accepts TCP
connections in the kernel and answers nothing): a wait must raise
``ResultTimeoutError`` at its deadline, not when a socket timeout (5 s, then a
reconnect's handshake, 5 s more) gives up."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, ResultTimeoutError, create_client, define_workflow
from tests.helpers import WorkerPool
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

#: How far past its timeout a wait may return (thread start-up, a loaded CI machine:
#: 0.5 s was too little there). Below the socket timeout (5 s), which a wait that
#: did not keep its own deadline would have waited out.
MARGIN_S = 3.0


@pytest.fixture()
def stalled_client(server: RedisServer, registry: Registry) -> Iterator[Client]:
    c = create_client(server.url, prefix="stall", registry=registry, default=False)
    try:
        yield c
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        c.close()


def _stop(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def _cont(server: RedisServer) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


def _timed_out_within(wait: Any, timeout: float) -> float:
    start = time.monotonic()
    with pytest.raises(ResultTimeoutError):
        wait(timeout)
    return time.monotonic() - start


def test_sync_result_keeps_its_timeout_while_redis_is_stopped(
    server: RedisServer, stalled_client: Client, registry: Registry
) -> None:
    @define_workflow("idle", queue="nobody", registry=registry)
    def idle(ctx: Context[Any]) -> int:
        return 1

    handle = idle.run(None, client=stalled_client)
    with pytest.raises(ResultTimeoutError):  # both connections are up
        handle.result(timeout=0.05)

    # Stopped before the wait: the subscription is never confirmed and the read
    # of the run is never answered.
    _stop(server)
    try:
        took = _timed_out_within(handle.result, 1.0)
    finally:
        _cont(server)
    assert took < 1.0 + MARGIN_S, f"result(timeout=1.0) returned after {took:.2f} s"

    # Stopped mid-wait, then a second wait while it still is (the first one
    # gave up on its read: the second reconnects to a server that does not answer).
    timer = threading.Timer(0.3, _stop, (server,))
    timer.start()
    try:
        first = _timed_out_within(handle.result, 1.0)
        second = _timed_out_within(handle.result, 1.0)
    finally:
        timer.join()
        _cont(server)
    assert first < 1.0 + MARGIN_S, f"result(timeout=1.0) returned after {first:.2f} s"
    assert second < 1.0 + MARGIN_S, f"the next result(timeout=1.0) took {second:.2f} s"

    # A thread with no connection yet (its pub/sub connection's handshake stalls).
    _stop(server)
    took_fresh: list[float] = []
    try:
        t = threading.Thread(
            target=lambda: took_fresh.append(_timed_out_within(handle.result, 1.0))
        )
        t.start()
        t.join(30)
    finally:
        _cont(server)
    assert took_fresh and took_fresh[0] < 1.0 + MARGIN_S, f"fresh thread: {took_fresh}"

    # Once the server answers again, the same handle gets the run's output.
    pool = WorkerPool(stalled_client)
    pool.start(queues=["nobody"])
    try:
        assert handle.result(timeout=30) == 1
    finally:
        pool.stop_all()
