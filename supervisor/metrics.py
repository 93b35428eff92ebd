"""Prometheus metrics for a whole host, served by the arbiter's own loop.

Children send metric deltas (JSON lines, each under ``PIPE_BUF`` so writes from
many children never interleave) through one pipe the parent created before
forking. The parent merges them, adds its own counts (child exits by cause,
requeues, lease expiries, cron fires and skips), and answers
``GET /metrics`` from a non-blocking listening socket registered on the same
selector as the signal pipe: no thread, no framework (``--metrics-port``).
``HEAD /metrics`` gets GET's headers (no body, nothing rendered), another method
on it ``405`` with ``Allow: GET, HEAD``, another path ``404``.

Gauges (queue depths, running runs per workflow, children alive) are read at
scrape time, and so are the ``process_*`` samples of the parent and each child
(:func:`process_samples`, psutil reading ``/proc``: no thread, no sampling loop)
and ``redflow_build_info``.

Invariants of the HTTP side (it runs inside the arbiter, so a client must never
be able to stop or stall it):

- At most ``max_conns`` (32) connections are open at once; one more closes
  the oldest of those whose request has not come (idle or slow clients cannot
  keep a scrape out), or, when every one is being answered, the oldest of all
  (clients that do not read their answers cannot keep one out either).
- Each connection has ``conn_timeout`` (5 s) from accept to the last byte of
  the response; an idle or slow client is closed when it runs out (checked on
  every loop iteration, the loop's timeout includes the nearest deadline).
- Reads and writes are non-blocking; no call here waits on a client.
- One rendering per wait of the loop (:meth:`new_batch`): the scrapes whose
  requests came in together share it. A rendering reads the gauges from Redis
  (40-90 ms at 5,000 queues), and ``max_conns`` clients scraping over and over
  held the loop for that many renderings in a row before it looked at a signal,
  a child's exit or a run's timeout again.
- On a loopback bind (the default, 127.0.0.1) a request whose ``Host`` names
  another host gets 421, as the dashboard does: a web page on a DNS name
  rebound to 127.0.0.1 cannot read the workflow and queue names from an
  operator's browser. Loopback addresses, ``localhost`` and this machine's own
  name pass; so does a request without ``Host`` (HTTP/1.0, not a browser).
- Running out of descriptors (``EMFILE``/``ENFILE``) never escapes: a reserved
  descriptor is given up to accept and close the pending connection (so the
  backlog drains instead of spinning), and where even that fails accepting
  pauses for a second. Every other error is logged (at most every 10 s) and
  costs at most the connection it came from.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import platform
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from redflow_mp import __version__
from redflow_mp.metrics import Labels
from redflow_mp.registry import Workflow

from .exposition import MetricsStore, render

__all__ = ["CONN_TIMEOUT", "MAX_CONNS", "MetricsHub", "build_info", "process_samples"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 8192
MAX_CONNS = 32
CONN_TIMEOUT = 5.0
_ACCEPT_PAUSE = 1.0
_LOG_EVERY = 10.0
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# accept() errors that concern only the connection being accepted.
_CONN_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET)

LISTEN = "metrics-listen"
CONN = "metrics-conn"


def process_samples(processes: Iterable[tuple[str, int]]) -> list[tuple[str, Labels, float]]:
    """``process_*`` samples of each ``(label, pid)``, read now; a process that is gone
    (or unreadable, e.g. out of descriptors) is left out rather than failing a scrape."""
    import psutil  # here: not before the first fork (docs/internals.md, "Start-up")

    out: list[tuple[str, Labels, float]] = []
    for label, pid in processes:
        labels: Labels = (("process", label),)
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                values = (
                    ("process_resident_memory_bytes", float(proc.memory_info().rss)),
                    ("process_cpu_seconds_total", float(cpu.user + cpu.system)),
                    ("process_open_fds", float(proc.num_fds())),
                    ("process_start_time_seconds", float(proc.create_time())),
                )
        except (psutil.Error, OSError):
            continue
        out.extend((name, labels, value) for name, value in values)
    return out


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(request: bytes) -> str | None:
    """The host name a request's ``Host`` header names (no port), or None."""
    for line in request.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1").lower()
            if host.startswith("["):
                return host[1:].split("]", 1)[0]
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if not line:
            break
    return None


def build_info() -> tuple[str, Labels, float]:
    labels: Labels = (("python", platform.python_version()), ("version", __version__))
    return ("redflow_build_info", labels, 1.0)


class _Conn:
    __slots__ = ("buf", "deadline", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.out = b""


class MetricsHub:
    """The delta pipe, the totals, and the optional HTTP endpoint."""

    def __init__(
        self,
        gauges: Callable[[], Iterable[tuple[str, Labels, float]]],
        max_workflows: int = 0,
        registry: Iterable[Workflow[Any, Any]] = (),
        *,
        max_conns: int = MAX_CONNS,
        conn_timeout: float = CONN_TIMEOUT,
    ) -> None:
        """``max_workflows`` (0: no cap): workflows with series of their own, the
        first of ``registry`` by name, then the first others met (exposition.py)."""
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.store = MetricsStore(max_workflows=max_workflows)
        self.store.workflows.update(sorted(wf.name for wf in registry)[:max_workflows])
        self._gauges = gauges
        self._pending = b""
        self.max_conns = max_conns
        self.conn_timeout = conn_timeout
        self.listener: socket.socket | None = None
        self.conns: dict[int, _Conn] = {}
        self._selector: selectors.BaseSelector | None = None
        self._reserve: int | None = None
        self._paused_until: float | None = None
        self._logged: dict[str, float] = {}
        # Host names a request may name on a loopback bind (None: any; see above).
        self._hosts: frozenset[str] | None = None
        # The body rendered for the requests of this wait (new_batch forgets it).
        self._batch_body: bytes | None = None

    def listen(self, host: str, port: int, selector: selectors.BaseSelector) -> tuple[str, int]:
        """Bind the endpoint and register it on ``selector`` (the arbiter's)."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.listener = sock
        self._selector = selector
        if _is_loopback(host.strip("[]")):
            self._hosts = frozenset({"localhost", socket.gethostname().lower()})
        self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        selector.register(sock, selectors.EVENT_READ, LISTEN)
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

    def on_event(self, key: selectors.SelectorKey, mask: int) -> None:
        """Handle a readiness event of the listener or a connection; never raises."""
        try:
            if key.data == LISTEN:
                self._accept()
            elif key.data == CONN:
                if mask & selectors.EVENT_READ:
                    self._on_readable(key.fd)
                if mask & selectors.EVENT_WRITE:
                    self._flush(key.fd)
        except Exception as exc:  # the arbiter must outlive any client
            self._warn("event", "metrics endpoint error (connection dropped): %s", exc)
            if key.data == CONN:
                self.close(key.fd)

    def new_batch(self) -> None:
        """A new wait's events: the next ``GET /metrics`` renders the page anew.
        Every request read in one wait arrived before its first rendering began, so
        that rendering answers them all (it is as fresh as one of their own)."""
        self._batch_body = None

    def tick(self, now: float) -> None:
        """Close connections past their deadline; resume a paused listener."""
        for fd, conn in list(self.conns.items()):
            if now >= conn.deadline:
                log.debug("metrics connection timed out after %.1f s", self.conn_timeout)
                self.close(fd)
        if self._paused_until is not None and now >= self._paused_until:
            self._resume()

    def next_due(self) -> float | None:
        """When :meth:`tick` has work next (None: nothing pending)."""
        times = [conn.deadline for conn in self.conns.values()]
        if self._paused_until is not None:
            times.append(self._paused_until)
        return min(times, default=None)

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _CONN_GONE:
                    continue
                if exc.errno in _OUT_OF_FDS and self._shed_one():
                    continue
                self._warn("accept", "metrics endpoint cannot accept (%s); pausing 1 s", exc)
                self._pause()
                return
            if len(self.conns) >= self.max_conns and not self._make_room():
                # Over the bound with none to close (max_conns 0): refuse at once rather
                # than hold a descriptor.
                with contextlib.suppress(OSError):
                    sock.close()
                self._warn(
                    "busy", "metrics endpoint: %d connections open; refusing more", len(self.conns)
                )
                continue
            sock.setblocking(False)
            fd = sock.fileno()
            self.conns[fd] = _Conn(sock, time.monotonic() + self.conn_timeout)
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ, CONN)

    def _make_room(self) -> bool:
        """Close the connection accepted first of those whose request has not come
        (idle or slow), else, every one being answered, the one accepted first (a
        client that does not read its answer holds it up to ``conn_timeout``);
        False when there is none. Refusing the new one instead let clients that
        reconnect as soon as they are closed hold all ``max_conns`` for good and
        keep every scrape out."""
        waiting = [(c.deadline, fd) for fd, c in self.conns.items() if not c.out]
        if not waiting:
            waiting = [(c.deadline, fd) for fd, c in self.conns.items()]
        if not waiting:
            return False
        self.close(min(waiting)[1])
        return True

    def _shed_one(self) -> bool:
        """Out of descriptors: use the reserved one to accept and drop one pending
        connection (the libev/nginx trick); False when that is not possible."""
        assert self.listener is not None
        if self._reserve is None:
            return False
        os.close(self._reserve)
        self._reserve = None
        try:
            sock, _ = self.listener.accept()
            sock.close()
            shed = True
        except OSError:
            shed = False
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._reserve = None
        self._warn("fds", "metrics endpoint: out of file descriptors; dropping connections")
        return shed

    def _pause(self) -> None:
        if self._paused_until is None and self._selector is not None and self.listener is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self.listener)
        self._paused_until = time.monotonic() + _ACCEPT_PAUSE

    def _resume(self) -> None:
        self._paused_until = None
        if self._reserve is None:
            with contextlib.suppress(OSError):
                self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if self._selector is not None and self.listener is not None:
            try:
                self._selector.register(self.listener, selectors.EVENT_READ, LISTEN)
            except (KeyError, ValueError, OSError) as exc:
                self._warn("accept", "metrics endpoint cannot resume (%s); retrying", exc)
                self._paused_until = time.monotonic() + _ACCEPT_PAUSE

    def _on_readable(self, fd: int) -> None:
        conn = self.conns.get(fd)
        if conn is None or conn.out:
            return
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(fd)
            return
        if not data:
            self.close(fd)
            return
        conn.buf += data
        if b"\r\n\r\n" not in conn.buf and len(conn.buf) < _MAX_REQUEST:
            return
        conn.out = self._response(conn.buf)
        conn.buf = b""
        self._flush(fd)

    def _response(self, request: bytes) -> bytes:
        line = request.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        parts = line.split()
        method = parts[0] if parts else ""
        ours = len(parts) >= 2 and parts[1].split("?")[0] == "/metrics"
        if self._misdirected(request):
            body = b"misdirected request: this endpoint answers loopback hosts only\n"
            head = "HTTP/1.0 421 Misdirected Request\r\nContent-Type: text/plain\r\n"
        elif ours and method == "HEAD":
            # GET's headers without its body (and without rendering it: no length).
            head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            return f"{head}Connection: close\r\n\r\n".encode()
        elif ours and method == "GET":
            if self._batch_body is None:
                self.read_pipe()
                self._batch_body = render(self.store, self._gauges()).encode()
            body = self._batch_body
            head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        elif ours:
            body = b"method not allowed: GET /metrics\n"
            head = (
                "HTTP/1.0 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"
                "Content-Type: text/plain\r\n"
            )
        else:
            body = b"not found: try /metrics\n"
            head = "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
        if method == "HEAD":  # the headers only, whatever the answer
            return f"{head}Connection: close\r\n\r\n".encode()
        return f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body

    def _misdirected(self, request: bytes) -> bool:
        """On a loopback bind, whether the request names a host that is not ours."""
        hosts = self._hosts
        host = _host_of(request) if hosts is not None else None
        if hosts is None or host is None:
            return False
        return not (host in hosts or host.endswith(".localhost") or _is_loopback(host))

    def _flush(self, fd: int) -> None:
        """Send what the socket takes now; wait for writability for the rest."""
        conn = self.conns.get(fd)
        if conn is None or not conn.out:
            return
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(fd)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.close(fd)
            return
        assert self._selector is not None
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, CONN)

    def close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is None:
            return
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """Log at most every 10 s per kind: a client flood must not flood the log."""
        now = time.monotonic()
        if now - self._logged.get(kind, -_LOG_EVERY) >= _LOG_EVERY:
            self._logged[kind] = now
            log.warning(msg, *args)

    def fds_for_children(self) -> tuple[int, ...]:
        """Descriptors a child must close (it keeps only the pipe's write end)."""
        fds = [self.read_fd]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        if self._reserve is not None:
            fds.append(self._reserve)
        fds.extend(self.conns)
        return tuple(fds)

    def shutdown(self) -> None:
        for fd in list(self.conns):
            self.close(fd)
        if self.listener is not None:
            if self._selector is not None and self._paused_until is None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(self.listener)
            self.listener.close()
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                os.close(self._reserve)
            self._reserve = None
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
