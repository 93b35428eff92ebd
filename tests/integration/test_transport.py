"""The transport's per-thread connections: opened lazily, closed when the thread ends."""

from __future__ import annotations

import gc
import threading

import pytest

from redflow_mp import Client

pytestmark = pytest.mark.timeout(30)


def _connections(client: Client) -> int:
    return len(client.redis.client_list())


def test_a_thread_connection_is_closed_when_the_thread_ends(client: Client) -> None:
    before = _connections(client)

    def work() -> None:
        for _ in range(3):
            assert client.transport.call("PING") == b"PONG"

    gc.disable()  # what is closed must be closed by the thread's end, not by a GC pass
    try:
        for _ in range(5):  # a thread per request must not leak a connection each
            t = threading.Thread(target=work)
            t.start()
            t.join()
        # Left to the garbage collector, a connection in a reference cycle can be
        # finalized after its socket, which then warns "unclosed socket".
        assert _connections(client) <= before
    finally:
        gc.enable()
