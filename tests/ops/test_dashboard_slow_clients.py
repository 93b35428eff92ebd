"""The stand-alone dashboard server against clients that send their request slowly
(slowloris): the request handler's ``timeout`` (30 s) bounds a whole request, not
each read, so connections that trickle a byte now and then cannot hold every one
of the ``MAX_CONNECTIONS`` threads for good and lock the operator out."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from urllib.parse import urlsplit

from redflow_supervisor.ops.dashboard import MAX_CONNECTIONS, _RequestHandler
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
