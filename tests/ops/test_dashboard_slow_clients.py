"""The stand-alone dashboard server against clients that send their request slowly
(slowloris): the request handler's ``timeout`` (30 s) bounds a whole request, not
each read, so connections that trickle a byte now and then cannot hold every one
of the ``MAX_CONNECTIONS`` threads for good and lock the operator out."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import pytest

from redflow_supervisor.ops.dashboard import MAX_CONNECTIONS, DashboardServer, _RequestHandler
from tests.ops.web import Start


def _healthz(host: str, port: int) -> str | None:
    """The body of ``GET /healthz``, or None when the server refused or closed."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _trickle(socks: list[socket.socket], data: bytes) -> int:
    """Send ``data`` on every socket still open; the number still open."""
    for s in list(socks):
        try:
            s.sendall(data)
        except OSError:  # closed by the server
            socks.remove(s)
            s.close()
    return len(socks)


def test_trickling_clients_cannot_hold_the_dashboard_for_good(dashboard: Start) -> None:
    """Each of MAX_CONNECTIONS sockets sends a request line, then one byte of a
    header every second: every read finishes within the 30 s socket timeout, so
    before, the server waited on them for ever and refused everyone else (the
    operator's GET /healthz was closed at accept for as long as they trickled)."""
    base = dashboard()
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    limit = float(_RequestHandler.timeout)
    socks = [socket.create_connection((host, port)) for _ in range(MAX_CONNECTIONS)]
    try:
        _trickle(socks, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        served = None
        while time.monotonic() - started < limit + 15:
            _trickle(socks, b"a")
            time.sleep(1.0)
            if time.monotonic() - started > limit + 2 and _healthz(host, port) == "ok\n":
                served = time.monotonic() - started
                break
        assert served is not None, (
            f"GET /healthz was still refused {limit + 15:.0f} s after {MAX_CONNECTIONS} "
            f"clients began trickling their requests ({len(socks)} of them still open)"
        )
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def test_the_operator_is_served_while_every_connection_is_taken(dashboard: Start) -> None:
    """The request deadline alone frees the threads only every 30 s, and an attacker
    reconnects at once: while MAX_CONNECTIONS connections trickle (or idle), a new
    connection is served by closing the one that has waited longest for its
    request. Before, it was closed at accept: the operator's GET /healthz failed
    as long as the attacker held the connections."""
    base = dashboard()
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    socks = [socket.create_connection((host, port)) for _ in range(MAX_CONNECTIONS)]
    try:
        _trickle(socks, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        time.sleep(1.0)  # every one of them accepted and waiting in its thread
        assert _trickle(socks, b"a") == MAX_CONNECTIONS
        served = [_healthz(host, port) for _ in range(3)]
        assert served == ["ok\n"] * 3, (
            f"GET /healthz while {MAX_CONNECTIONS} clients trickled their requests: {served}"
        )
        # the room was made by closing the oldest waiting ones, no more than needed
        time.sleep(0.5)
        assert _trickle(socks, b"a") >= MAX_CONNECTIONS - 3
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def _slow_readers(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each ask for the runs page again and again
    (pipelined on one keep-alive connection) and read their answers slowly: a
    small receive buffer, so the server's thread soon blocks sending."""
    request = b"GET /runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, port))
        s.sendall(request * 2000)
        socks.append(s)
    return socks


def _read_a_little(socks: list[socket.socket]) -> int:
    """Read up to 8 KiB from each socket (the server's send moves on, so its
    per-send timeout never runs out); the number of sockets still open."""
    for s in list(socks):
        s.setblocking(False)
        try:
            if s.recv(8192) != b"":
                continue
        except BlockingIOError:
            continue
        except OSError:
            pass
        socks.remove(s)  # closed by the server
        s.close()
    return len(socks)


def _handlers_ended() -> None:
    """Wait (at most 10 s) for the server's threads of the closed connections: they
    render the requests they had read (pipelined) until a send fails, which must
    not outlive the test's Redis client."""
    for _ in range(100):
        if not any("process_request" in t.name for t in threading.enumerate()):
            return
        time.sleep(0.1)


def test_slow_readers_cannot_lock_the_operator_out(dashboard: Start) -> None:
    """MAX_CONNECTIONS clients that pipeline requests and read the answers a few
    KiB a second keep every thread busy sending (no thread waits for a request,
    and each send progresses within its 30 s timeout): before, a new connection
    was closed at accept for as long as they read, the operator's included. A
    new connection now closes the oldest busy one when none is waiting."""
    base = dashboard()
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    socks = _slow_readers(host, port, MAX_CONNECTIONS)
    try:
        for _ in range(3):  # every thread is now blocked sending
            time.sleep(1.0)
            _read_a_little(socks)
        served = []
        for _ in range(3):
            served.append(_healthz(host, port))
            _read_a_little(socks)
        assert served == ["ok\n"] * 3, (
            f"GET /healthz while {MAX_CONNECTIONS} clients read their answers slowly: "
            f"{served} ({len(socks)} of them still open)"
        )
        # the room was made by closing the oldest ones, no more than needed
        assert _read_a_little(socks) >= MAX_CONNECTIONS - 3
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        _handlers_ended()


#: The answer each client that does not read gets (one object, sent by every thread):
#: larger than any socket buffer, so its thread is soon blocked sending it.
BIG = b"x" * (16 << 20)


def _not_reading(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections that ask for a large answer and read none of it."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: 1\r\n\r\n")
        socks.append(s)
    return socks


def _stalled(server: DashboardServer, count: int) -> None:
    """Wait until ``count`` of the server's threads are blocked sending their
    answers (at most 300 looks, 0.1 s apart). (Before ``sending`` existed: at once.)"""
    for _ in range(300):
        handlers = list(server._handlers.values())
        if sum(bool(getattr(h, "sending", True)) for h in handlers) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the slow readers did not stall: {len(handlers)} threads")


def test_the_operators_page_is_not_cut_to_make_room(
    dashboard: Start,
    dashboard_servers: list[tuple[DashboardServer, threading.Thread]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's browser keeps its keep-alive connections (the page reloads
    every 5 s, well within the 30 s idle deadline), so they are the oldest on the
    server. While MAX_CONNECTIONS - 1 clients that do not read their answers hold
    the rest, the operator's page is being rendered (a slow Redis read) when a new
    connection comes (its browser's next parallel connection, or the attacker's):
    before, the room was made by closing the oldest connection answering, the
    operator's, and waiting a second for its thread, still rendering, so the new
    one was refused too. The victim is now one blocked sending (a client not
    reading)."""
    base = dashboard()
    server = dashboard_servers[-1][0]
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    operator = http.client.HTTPConnection(host, port, timeout=30)
    operator.request("GET", "/healthz")
    assert operator.getresponse().read() == b"ok\n"  # kept alive: the oldest connection
    rendering, go_on = threading.Event(), threading.Event()
    app = server.app

    def app_with_slow_reads(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("HTTP_X_BIG"):
            start_response("200 OK", [("Content-Length", str(len(BIG)))])
            return [BIG]
        if environ.get("HTTP_X_OPERATOR"):
            rendering.set()
            go_on.wait(30)  # a slow Redis read, for as long as the test needs
        return app(environ, start_response)

    monkeypatch.setattr(server, "app", app_with_slow_reads)
    socks = _not_reading(host, port, MAX_CONNECTIONS - 1)
    try:
        _stalled(server, MAX_CONNECTIONS - 1)
        operator.request("GET", "/runs", headers={"X-Operator": "1"})  # its next reload
        assert rendering.wait(30)
        before = set(server._open)
        newcomer = _healthz(host, port)
        go_on.set()
        try:
            resp = operator.getresponse()
            page: tuple[int, int] | str = (resp.status, len(resp.read()))
        except (OSError, http.client.HTTPException) as exc:
            page = repr(exc)
        assert (newcomer, isinstance(page, tuple) and page[0]) == ("ok\n", 200), (
            f"a new connection while {MAX_CONNECTIONS - 1} clients did not read their answers "
            f"and the operator's page was rendering: {newcomer!r}; the operator's page: {page}"
        )
        # the room was made by closing one of those clients, no more
        closed = [c for c in before if c not in server._open]
        assert len(closed) == 1, f"{len(closed)} connections closed to make room for one"
    finally:
        go_on.set()
        operator.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
