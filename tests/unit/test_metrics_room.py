"""The metrics endpoint full of idle connections (``max_conns`` of them, no
request sent) makes room for a new one by closing the oldest idle connection:
the scrape is answered at once, not after the idle ones' ``conn_timeout``. Here
the timeout is an hour and ``tick`` (which enforces it) never runs, so nothing
but that room-making can answer the scrape (the process test,
tests/process/test_metrics_busy.py, checks the same on a real supervisor)."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable, Iterator

import pytest

from redflow_supervisor.metrics import MetricsHub

MAX = 4


@pytest.fixture()
def hub() -> Iterator[tuple[MetricsHub, selectors.BaseSelector, int]]:
    made = MetricsHub(
        lambda: [("redflow_children_alive", (), 1.0)], max_conns=MAX, conn_timeout=3600.0
    )
    selector = selectors.DefaultSelector()
    _, port = made.listen("127.0.0.1", 0, selector)
    try:
        yield made, selector, port
    finally:
        made.shutdown()
        selector.close()


def _pump(hub: MetricsHub, selector: selectors.BaseSelector, until: Callable[[], bool]) -> None:
    """Run the arbiter's share of the endpoint (its events, never ``tick``) until
    ``until()``; at most 2,000 waits of 10 ms (a count, not a deadline)."""
    for _ in range(2_000):
        if until():
            return
        for key, mask in selector.select(0.01):
            hub.on_event(key, mask)
    raise AssertionError("the endpoint did not get there")


def _closed(sock: socket.socket) -> bool:
    """The peer closed ``sock`` (EOF or reset); False while it is open and silent."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_scrape_on_a_full_endpoint_closes_the_oldest_idle_connection_and_is_answered(
    hub: tuple[MetricsHub, selectors.BaseSelector, int],
) -> None:
    made, selector, port = hub
    idle: list[socket.socket] = []
    try:
        for n in range(1, MAX + 1):  # accepted one by one: their order is known
            idle.append(socket.create_connection(("127.0.0.1", port)))
            _pump(made, selector, lambda n=n: len(made.conns) == n)  # type: ignore[misc]
        scrape = socket.create_connection(("127.0.0.1", port))
        idle.append(scrape)
        scrape.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = bytearray()

        def answered() -> bool:
            scrape.setblocking(False)
            try:
                while chunk := scrape.recv(65536):
                    reply.extend(chunk)
                return True  # EOF: the reply is whole
            except BlockingIOError:
                return False

        _pump(made, selector, answered)
        assert reply.startswith(b"HTTP/1.0 200 OK"), bytes(reply[:200])
        assert b"redflow_children_alive 1" in reply
        assert [_closed(s) for s in idle[:MAX]] == [True] + [False] * (MAX - 1)
    finally:
        for s in idle:
            s.close()


def _answering(hub: MetricsHub, n: int) -> bool:
    """``n`` connections accepted, each with the rest of its answer waiting."""
    return len(hub.conns) == n and all(c.out for c in hub.conns.values())


def test_a_scrape_on_an_endpoint_full_of_slow_readers_is_answered() -> None:
    """``max_conns`` clients that ask for a large page and never read it keep every
    connection answering (its rest waits in ``out``) until ``conn_timeout`` (5 s
    by default), and reconnect at once: none waits for a request, so before, a
    new connection was closed at accept and every scrape failed while they held
    on. A new one now closes the connection accepted first and is answered."""
    series = [(f"redflow_test_gauge_{i:07d}", (), 1.0) for i in range(200_000)]
    made = MetricsHub(lambda: series, max_conns=MAX, conn_timeout=3600.0)
    selector = selectors.DefaultSelector()
    _, port = made.listen("127.0.0.1", 0, selector)
    held: list[socket.socket] = []
    accepted: list[int] = []  # the endpoint's fds of the held connections, in order
    try:
        for n in range(1, MAX + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing
            s.connect(("127.0.0.1", port))
            held.append(s)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _pump(made, selector, lambda n=n: _answering(made, n))  # type: ignore[misc]
            accepted.append(next(fd for fd in made.conns if fd not in accepted))
        scrape = socket.create_connection(("127.0.0.1", port))
        held.append(scrape)
        scrape.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = bytearray()

        def answered() -> bool:
            scrape.setblocking(False)
            try:
                while chunk := scrape.recv(1 << 20):
                    reply.extend(chunk)
                return True  # EOF: the reply is whole, or the connection was refused
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        _pump(made, selector, answered)
        assert reply.startswith(b"HTTP/1.0 200 OK"), (
            f"a scrape while {MAX} clients did not read their answers: "
            f"{bytes(reply[:60])!r} (closed at accept)"
        )
        assert b"redflow_test_gauge_0199999 1" in reply
        # the room was made by closing the connection accepted first, only that one
        assert [fd in made.conns for fd in accepted] == [False] + [True] * (MAX - 1)
    finally:
        for s in held:
            s.close()
        made.shutdown()
        selector.close()
