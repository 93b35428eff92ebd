"""The dashboard: :func:`make_app` to mount it in a web application, and the
stand-alone ``redflow dashboard`` server around the same application.

Pages (server-rendered HTML, refreshed every few seconds): runs with
workflow/status filters and paging, a run with its step timeline, error and
traceback, workflows with cron next fire times, queues, supervisors. Cancel,
retry and resume are buttons on the run page. The WSGI application, its routing and its
security rules are in ``webapp.py``; the pages in ``pages.py`` and ``runpage.py``,
the document around them in ``markup.py``; the look in ``styles.py``.

Mounted (:func:`make_app`): a WSGI callable for Flask or Django (WSGI) and
FastAPI/Starlette (through ``a2wsgi.WSGIMiddleware``), honouring ``SCRIPT_NAME``.
The host application's own authentication sits in front of it; by default the
app neither asks for a sign-in nor checks ``Host`` (the host owns both), and
actions need the token typed into their form whatever the host's session says.

Stand-alone (:func:`serve`): a threaded ``wsgiref`` server (a thread per
connection, HTTP/1.1 keep-alive; a request, or the wait for the next one, has
30 s in all, however its bytes trickle in; with every connection taken, a new
one closes the one waiting longest), bound to 127.0.0.1
unless told otherwise. On a loopback bind pages need no token and ``Host`` must
name a loopback host (no DNS rebinding); any other bind needs a token, and then
every page asks for it. It runs as its own process, never inside the supervisor.
Why the standard library: a few server-rendered pages over the client do not
justify a run-time dependency (SPEC §1).
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import IO, Any, BinaryIO, cast
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from redflow_mp.client import Client

from . import render
from .webapp import (
    MAX_BODY,
    SESSION_IDLE,
    SESSION_MAX,
    AppSettings,
    DashboardApp,
    LoginLimits,
    is_loopback,
)

__all__ = [
    "MAX_CONNECTIONS",
    "AppSettings",
    "DashboardApp",
    "DashboardConfig",
    "DashboardServer",
    "LoginLimits",
    "is_loopback",
    "make_app",
    "make_server",
    "serve",
]

#: Connections (threads) served at once (an idle keep-alive connection holds its
#: thread up to 30 s, and needs no token to open). When all are taken, a new one
#: closes the connection that has waited longest for its next request (an attacker
#: holding them all, trickling bytes, cannot lock the operator out) and is served;
#: when none is waiting (all are answering a request: clients that pipeline
#: requests and read the answers slowly keep each send within its timeout), it
#: closes the oldest of those sending (else the oldest answering); when none has
#: started yet, it is closed when accepted.
MAX_CONNECTIONS = 100

DRAIN_LIMIT = 1 << 20  # bytes of an unread request body dropped before closing
DRAIN_SECONDS = 2.0  # and for at most this long (a trickled body cannot hold the thread)
TOKEN_HINT = "start the dashboard with --token or RF_DASHBOARD_TOKEN"


def make_app(
    client: Client,
    token: str | None = None,
    read_only: bool = False,
    *,
    sign_in: bool = False,
    host_check: Callable[[str], bool] | None = None,
    shown_url: str | None = None,
    refresh: int = 5,
    page_size: int = 25,
    session_idle: float = SESSION_IDLE,
    session_max: float = SESSION_MAX,
    login_limits: LoginLimits | None = None,
) -> DashboardApp:
    """The dashboard as a WSGI application over ``client``'s Redis and prefix.

    Args:
        client: the client whose namespace it shows (and acts on).
        token: the token that cancel, retry and resume need in their POST (at least
            16 characters). Pass ``None`` together with ``read_only=True``.
        read_only: no actions at all (no forms; action POSTs get 403).
        sign_in: every page asks for the token first (sign-in form and cookie,
            or ``Authorization: Bearer``); off when the host's auth sits in front.
        host_check: called with the request's host name (``Host`` without its
            port); a request it rejects gets 421. ``None`` (the default when
            mounted): the host application owns its Host policy. Pass
            :func:`is_loopback` for a loopback-only server without one.
        shown_url: the Redis URL shown in the header (default: the client's,
            password masked).
        refresh: seconds between page refreshes (0: off).
        page_size: runs per page (1 to 500).
        session_idle: with ``sign_in``, seconds a session lasts unused (2 h).
        session_max: with ``sign_in``, seconds a session lasts after sign-in (12 h).
        login_limits: how failed token checks are slowed (:class:`LoginLimits`:
            5 free per address, 50 in all, then a doubling wait from 1 s).

    Raises:
        ValueError: a token shorter than 16 characters, no token without
            ``read_only=True``, ``sign_in`` without a token, a bad size.
    """
    settings = AppSettings(
        token=token,
        read_only=read_only,
        sign_in=sign_in,
        host_check=host_check,
        shown_url=client.transport.describe() if shown_url is None else shown_url,
        prefix=client.prefix,
        refresh=refresh,
        page_size=page_size,
        session_idle=session_idle,
        session_max=session_max,
        login_limits=login_limits or LoginLimits(),
    )
    return DashboardApp(client, settings)


@dataclass(frozen=True)
class DashboardConfig:
    """How the stand-alone server binds, what it shows and whether it allows actions."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    shown_url: str = ""
    prefix: str = "redflow"
    refresh: int = 5
    page_size: int = 25
    read_only: bool = False
    session_idle: float = SESSION_IDLE
    session_max: float = SESSION_MAX
    login_limits: LoginLimits = field(default_factory=LoginLimits)

    def __post_init__(self) -> None:
        if not self.loopback and not self.token:
            raise ValueError(
                f"binding the dashboard to {self.host} (not a loopback address) needs a token: "
                "pass --token or set RF_DASHBOARD_TOKEN"
            )
        self.app_settings()  # the token, size and refresh rules

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def app_settings(self) -> AppSettings:
        """The application's settings: sign-in off a loopback bind, Host checked on one."""
        return AppSettings(
            token=self.token,
            read_only=self.read_only or self.token is None,
            sign_in=not self.loopback,
            host_check=is_loopback if self.loopback else None,
            shown_url=self.shown_url,
            prefix=self.prefix,
            refresh=self.refresh,
            page_size=self.page_size,
            actions_off_reason="started with --read-only" if self.token else TOKEN_HINT,
            session_idle=self.session_idle,
            session_max=self.session_max,
            login_limits=self.login_limits,
        )


# ------------------------------------------------------------------ server


class _ServerHandler(ServerHandler):
    """wsgiref's handler speaking HTTP/1.1; says ``Connection: close`` when closing."""

    http_version = "1.1"
    server_software = "redflow-dashboard"
    request_handler: _RequestHandler
    headers: Headers  # set by start_response (undeclared in the stubs)

    def finish_response(self) -> None:
        try:
            super().finish_response()
        except OSError:  # the client is gone (or stalled past the send timeout)
            # wsgiref drops a reset or broken pipe silently, and the connection went
            # on with the requests already read from it (pipelined: up to a buffer's
            # worth, each a page rendered for nobody).
            self.request_handler.close_connection = True
            raise

    def _write(self, data: bytes) -> None:
        rh = self.request_handler
        rh.sending = True  # blocked here when the client does not read: a victim first
        try:
            super()._write(data)
        finally:
            rh.sending = False

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        rh = self.request_handler
        if self.headers.get("Content-Length") is None:
            rh.close_connection = True  # the end of the body is the end of the connection
        if rh.close_connection:
            self.headers["Connection"] = "close"


class _DeadlineReader(io.RawIOBase):
    """A connection's input that ends at its handler's request deadline: each read
    waits only for the time left, so a client sending a byte now and then (every
    read well within the socket timeout) cannot hold the thread past it."""

    def __init__(self, handler: _RequestHandler) -> None:
        super().__init__()
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        conn = self.handler.connection
        conn.settimeout(left)
        return int(conn.recv_into(buffer))


class _RequestHandler(WSGIRequestHandler):
    """Requests of one connection, one after another (keep-alive), until it closes.

    The body is read before the application runs (at most ``MAX_BODY``), so a
    request the application refuses without reading its body cannot leave bytes
    that would be taken for the next request; a larger or chunked body closes the
    connection after the answer (the rest of it is read and dropped for a moment
    first: closing a socket with unread input resets the connection, and the
    client could lose the answer).
    """

    server: DashboardServer
    protocol_version = "HTTP/1.1"
    #: Seconds from waiting for a request (on a new or a keep-alive connection) to
    #: its last body byte: an idle or trickling client is closed then. Before, it
    #: bounded each read only: MAX_CONNECTIONS clients sending a header byte every
    #: few seconds held every thread for good and locked everyone else out.
    timeout = 30
    deadline = 0.0  # monotonic time the request being read must have arrived by

    _unread = False  # a body was left unread: drain before closing

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self))
        self.server.started(self)

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    evicted = False  # closed by the server to make room (DashboardServer.process_request)
    sending = False  # in a send of its answer (a client reading slowly keeps it there)

    def _handle_one(self) -> None:
        self.deadline = time.monotonic() + self.timeout
        self.server.waiting(self, True)
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:  # idle timeout, reset
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            self.close_connection = True
            return
        try:
            parsed = self.parse_request()  # False: it answered with an error
            body = self._body() if parsed else None
        except OSError:  # the deadline passed while the headers or body trickled in
            parsed = False
        self.server.waiting(self, False)
        if not parsed or body is None or self.evicted:  # (an evicted one's input ended)
            self.close_connection = True
            return
        self.connection.settimeout(self.timeout)  # writing the answer: per send
        handler = _ServerHandler(
            body,
            cast(IO[bytes], self.wfile),
            self.get_stderr(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self
        handler.run(self.server.app)  # evicted meanwhile: its send fails (finish_response)

    def _body(self) -> BinaryIO:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = self._unread = True
            return io.BytesIO()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = self._unread = True  # the application refuses it unread
            return io.BytesIO()
        return io.BytesIO(self.rfile.read(length) if length else b"")

    def finish(self) -> None:
        super().finish()
        if self._unread:
            conn = self.connection
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
                end = time.monotonic() + DRAIN_SECONDS
                drained = 0
                while drained < DRAIN_LIMIT and (left := end - time.monotonic()) > 0:
                    conn.settimeout(left)
                    if not (chunk := conn.recv(65536)):
                        break
                    drained += len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


class DashboardServer(ThreadingMixIn, WSGIServer):
    """The stand-alone server: a thread per connection over one :class:`DashboardApp`."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's 5: bursts waited for SYN retries)
    block_on_close = False  # server_close() ends the connections instead (below)
    allow_reuse_address = True

    def __init__(self, client: Client, config: DashboardConfig, quiet: bool = False) -> None:
        self.client = client
        self.config = config
        self.quiet = quiet
        self._open: set[socket.socket] = set()
        # the handlers waiting for a request on their connection, longest waiting first
        self._waiting: dict[socket.socket, _RequestHandler] = {}
        # every connection's handler once its thread started, oldest connection first
        self._handlers: dict[socket.socket, _RequestHandler] = {}
        self._open_lock = threading.Condition()  # notified when a connection ends
        host = config.host.strip("[]")
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, config.port), _RequestHandler)
        self.app = DashboardApp(client, config.app_settings())
        self.set_app(self.app)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def waiting(self, handler: _RequestHandler, on: bool) -> None:
        """``handler`` starts (``on``) or stops waiting for a request."""
        with self._open_lock:
            self._waiting.pop(handler.connection, None)
            if on and not handler.evicted:
                self._waiting[handler.connection] = handler  # (now the newest)

    def started(self, handler: _RequestHandler) -> None:
        """``handler``'s thread runs (its connection can be closed to make room)."""
        with self._open_lock:
            if handler.connection in self._open:
                self._handlers[handler.connection] = handler

    def _victim(self) -> _RequestHandler | None:
        """The connection closed to make room: the one that has waited longest for
        its next request, else the oldest one sending its answer (a client reading
        its answers slowly: every send moves on within its timeout, so nothing else
        ever frees its thread), else the oldest one answering, else None (every
        thread is still starting). Sending before rendering: the operator's
        browser keeps its connections alive (a reload every 5 s), so they are the
        oldest, and the one rendering its page (a Redis read) was closed first, its
        thread waited for in vain and the new connection refused as well."""
        if self._waiting:
            return self._waiting.pop(next(iter(self._waiting)))
        answering = [h for h in self._handlers.values() if not h.evicted]
        return next((h for h in answering if h.sending), answering[0] if answering else None)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            victim = self._victim() if len(self._open) >= MAX_CONNECTIONS else None
            if victim is not None:
                # Room made by closing that connection: its thread reads the end of
                # its input (or fails its send) and ends at once (waited for here, so
                # the threads stay at MAX_CONNECTIONS; at most a second).
                victim.evicted = True
                with contextlib.suppress(OSError):
                    victim.connection.shutdown(socket.SHUT_RDWR)
                self._open_lock.wait_for(lambda: victim.connection not in self._open, 1.0)
            full = len(self._open) >= MAX_CONNECTIONS
            if not full:
                self._open.add(request)
        if full:  # a thread per connection: never more than MAX_CONNECTIONS of them
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
            self._waiting.pop(request, None)
            self._handlers.pop(request, None)
            self._open_lock.notify_all()
        super().shutdown_request(request)

    def server_close(self) -> None:
        # Wake the threads waiting on idle keep-alive connections, so none outlives us.
        with self._open_lock:
            live = list(self._open)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        super().server_close()


def make_server(client: Client, config: DashboardConfig, quiet: bool = False) -> DashboardServer:
    """Bind the dashboard (``config.port`` 0 picks a free port; see ``.url``)."""
    return DashboardServer(client, config, quiet)


def serve(client: Client, config: DashboardConfig, quiet: bool = False) -> int:
    """Serve until interrupted (SIGINT/SIGTERM); returns the exit status."""
    try:
        server = make_server(client, config, quiet)
    except OSError as exc:
        print(
            f"redflow: cannot bind {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    if config.app_settings().actions:
        actions = "actions need the token"
    elif config.token:
        actions = "actions disabled (--read-only)"
    else:
        actions = "actions disabled (no token)"
    print(
        f"redflow dashboard: serving {server.url} (Redis {config.shown_url}, prefix "
        f"{render.clean(config.prefix)}; {actions})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
