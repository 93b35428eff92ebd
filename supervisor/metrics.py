"""Prometheus metrics for a whole host, served by the arbiter's own loop.

Children send metric deltas (JSON lines, each under ``PIPE_BUF`` so writes from
many children never interleave) through one pipe the parent created before
forking. The parent merges them, adds its own counts (child exits by cause,
requeues, lease expiries, cron fires and skips), and answers
``GET /metrics`` from a non-blocking listening socket registered on the same
selector as the signal pipe: no thread, no framework (``--metrics-port``).

Gauges (queue depths, running runs per workflow, children alive) are read at
scrape time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable

from redflow_mp.metrics import Labels

from .exposition import MetricsStore, render

__all__ = ["MetricsHub"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192


class _Conn:
    __slots__ = ("buf", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.out = b""


class MetricsHub:
    """The delta pipe, the totals, and the optional HTTP endpoint."""

    def __init__(self, gauges: Callable[[], Iterable[tuple[str, Labels, float]]]) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.store = MetricsStore()
        self._gauges = gauges
        self._pending = b""
        self.listener: socket.socket | None = None
        self.conns: dict[int, _Conn] = {}

    def listen(self, host: str, port: int) -> tuple[str, int]:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
        self.listener = sock
        addr = sock.getsockname()
        return str(addr[0]), int(addr[1])

    # ---------------------------------------------------------- child deltas

    def read_pipe(self) -> None:
        while True:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if not line:
                continue
            try:
                self.store.merge(json.loads(line))
            except (ValueError, TypeError):
                log.debug("dropped a malformed metrics line")

    # ------------------------------------------------------------------ HTTP

    def accept(self) -> list[socket.socket]:
        assert self.listener is not None
        accepted = []
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            sock.setblocking(False)
            self.conns[sock.fileno()] = _Conn(sock)
            accepted.append(sock)
        return accepted

    def on_readable(self, fd: int) -> bool:
        """Read from a client; returns True when the connection is finished."""
        conn = self.conns.get(fd)
        if conn is None:
            return True
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return False
        except OSError:
            self.close(fd)
            return True
        if not data:
            self.close(fd)
            return True
        conn.buf += data
        if b"\r\n\r\n" not in conn.buf and len(conn.buf) < _MAX_REQUEST:
            return False
        self._respond(conn)
        self.close(fd)
        return True

    def _respond(self, conn: _Conn) -> None:
        line = conn.buf.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
            self.read_pipe()
            body = render(self.store, self._gauges()).encode()
            head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        else:
            body = b"not found: try /metrics\n"
            head = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
        payload = f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        payload += body
        conn.sock.setblocking(True)
        conn.sock.settimeout(2.0)
        with contextlib.suppress(OSError):
            conn.sock.sendall(payload)

    def close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sock.close()

    def fds_for_children(self) -> tuple[int, ...]:
        """Descriptors a child must close (it keeps only the pipe's write end)."""
        fds = [self.read_fd]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        fds.extend(self.conns)
        return tuple(fds)

    def shutdown(self) -> None:
        for fd in list(self.conns):
            self.close(fd)
        if self.listener is not None:
            self.listener.close()
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
