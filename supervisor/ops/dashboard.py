"""``redflow dashboard``: a small web app over the client, on the standard library.

Pages (server-rendered HTML, refreshed every few seconds): runs with
workflow/status filters and paging, a run with its step timeline, error and
traceback, workflows with cron next fire times, queues, supervisors. Cancel
and retry are buttons on the run page.

Security rules, in order of how a request is checked:

- It binds to 127.0.0.1 unless told otherwise; a non-loopback bind needs a
  token (``--token`` or ``$RF_DASHBOARD_TOKEN``) and then every page asks for
  it too (a login form sets an HttpOnly, SameSite=Strict cookie derived from
  the token; scripts may send ``Authorization: Bearer <token>``). On a
  loopback bind the ``Host`` header must name a loopback host, which stops
  DNS-rebinding pages from reading the dashboard.
- Actions change state only by POST, never by GET, and each one needs the
  token itself in the form (field ``token``) or in an ``X-Redflow-Token``
  header, compared with :func:`hmac.compare_digest`. A cookie alone never
  authorises an action, so a cross-site form cannot forge one (CSRF); a POST
  whose ``Origin`` is another site is refused as well. Without a configured
  token there are no actions at all.
- Everything that comes from Redis or the request is escaped with
  :func:`html.escape` (run ids and names may hold quotes, braces, ``<script>``);
  a Content-Security-Policy allows no script but the page's own refresh
  timer (by nonce), and no framing. Redis URLs are shown masked.

The pages themselves are built in ``pages.py`` (HTML) with ``styles.py`` (CSS
and the refresh script); this module is the server: routing, the checks above,
the response headers, the actions.

Why ``http.server``: it needs no new run-time dependency, and the dashboard
runs as its own process (a ``ThreadingHTTPServer``), never inside the
supervisor. Actions run on one long-lived thread: the client keeps a
connection per thread for scripts, and a thread per request would leave one
behind per action.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import ipaddress
import secrets
import socket
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import redis

from redflow_mp import admin
from redflow_mp.client import Client
from redflow_mp.codec import RunStatus

from . import render
from .pages import (
    Page,
    e,
    error_page,
    frame,
    login_page,
    queues_page,
    run_page,
    runs_page,
    supervisors_page,
    workflows_page,
)

__all__ = ["DashboardConfig", "DashboardServer", "is_loopback", "make_server", "serve"]

T = TypeVar("T")

PageFunction = Callable[[Client, "DashboardConfig", dict[str, str]], Page]

COOKIE = "rf_dashboard"
MAX_BODY = 64 * 1024


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DashboardConfig:
    """How the dashboard binds, what it shows and whether it allows actions."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    shown_url: str = ""
    prefix: str = "redflow"
    refresh: int = 5
    page_size: int = 25

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the dashboard token must be at least 8 characters long")
        if not self.loopback and not self.token:
            raise ValueError(
                f"binding the dashboard to {self.host} (not a loopback address) needs a token: "
                "pass --token or set RF_DASHBOARD_TOKEN"
            )
        if not 1 <= self.page_size <= 500:
            raise ValueError("page size must be between 1 and 500")
        if self.refresh < 0:
            raise ValueError("refresh must be >= 0 seconds")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def session_value(self) -> str:
        """The login cookie's value: derived from the token, so no server-side state."""
        assert self.token is not None
        return hmac.new(
            self.token.encode(), b"redflow-dashboard-session", hashlib.sha256
        ).hexdigest()


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server; holds the client, the config and the action thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, client: Client, config: DashboardConfig, quiet: bool = False) -> None:
        self.client = client
        self.config = config
        self.quiet = quiet
        self.actions = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="redflow-dashboard-action"
        )
        host = config.host.strip("[]")
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, config.port), Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def run_action(self, fn: Callable[[], T]) -> T:
        return self.actions.submit(fn).result(timeout=30)

    def server_close(self) -> None:
        super().server_close()
        self.actions.shutdown(wait=False)


class Handler(BaseHTTPRequestHandler):
    """Routes GET pages and POST actions; see the module docstring for the rules."""

    server: DashboardServer
    server_version = "redflow-dashboard"
    sys_version = ""

    # ---------------------------------------------------------------- plumbing

    @property
    def config(self) -> DashboardConfig:
        return self.server.config

    @property
    def client(self) -> Client:
        return self.server.client

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/html; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        nonce: str = "",
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _redirect(self, location: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(
            HTTPStatus.SEE_OTHER,
            f'<a href="{e(location)}">continue</a>',
            headers={"Location": location, **(headers or {})},
        )

    def _render(self, page: Page) -> None:
        nonce = secrets.token_urlsafe(12)
        document = frame(page, self.config, urlsplit(self.path).path, nonce)
        self._send(page.status, document, nonce=nonce)

    def _error_page(self, status: int, message: str, nav: str = "") -> None:
        self._render(error_page(status, message, nav))

    def _host_ok(self) -> bool:
        """On a loopback bind, refuse requests for other host names (DNS rebinding)."""
        if not self.config.loopback:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return is_loopback(name)

    def _token_ok(self, candidate: str | None) -> bool:
        token = self.config.token
        if not token or not candidate:
            return False
        return hmac.compare_digest(candidate.encode("utf-8"), token.encode("utf-8"))

    def _read_allowed(self) -> bool:
        cfg = self.config
        if cfg.loopback:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._token_ok(auth[7:].strip()):
            return True
        if self._token_ok(self.headers.get("X-Redflow-Token")):
            return True
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode(), cfg.session_value().encode()
        )

    def _query(self) -> dict[str, str]:
        raw = parse_qs(urlsplit(self.path).query, keep_blank_values=True, max_num_fields=50)
        return {k: v[0] for k, v in raw.items() if v}

    def _guard(self, fn: Callable[[], None], nav: str = "") -> None:
        try:
            fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._error_page(503, f"Redis at {self.config.shown_url} is unreachable: {exc}", nav)
        except redis.RedisError as exc:
            self._error_page(503, f"Redis error: {exc}", nav)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            traceback.print_exc(file=sys.stderr)
            self._error_page(500, "internal error (see the dashboard's log)", nav)

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        if not self._host_ok():
            self._error_page(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
            return
        path = urlsplit(self.path).path
        if path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, "", content_type="image/x-icon")
            return
        if path == "/healthz":
            self._send(HTTPStatus.OK, "ok\n", content_type="text/plain; charset=utf-8")
            return
        if path == "/login":
            self._login_page()
            return
        if not self._read_allowed():
            self._login_page(HTTPStatus.UNAUTHORIZED)
            return
        routes: dict[str, tuple[str, PageFunction]] = {
            "/runs": ("runs", runs_page),
            "/run": ("runs", run_page),
            "/workflows": ("workflows", workflows_page),
            "/queues": ("queues", queues_page),
            "/supervisors": ("supervisors", supervisors_page),
        }
        if path == "/":
            self._redirect("/runs")
            return
        if path in ("/actions/cancel", "/actions/retry", "/logout"):
            self._error_page(HTTPStatus.METHOD_NOT_ALLOWED, "actions are POST only")
            return
        route = routes.get(path)
        if route is None:
            self._error_page(HTTPStatus.NOT_FOUND, "no such page")
            return
        nav, fn = route
        query = self._query()
        self._guard(lambda: self._render(fn(self.client, self.config, query)), nav)

    def do_POST(self) -> None:
        if not self._host_ok():
            self._error_page(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
            return
        origin = self.headers.get("Origin")
        host = self.headers.get("Host", "")
        if (origin and origin != "null" and urlsplit(origin).netloc != host) or self.headers.get(
            "Sec-Fetch-Site"
        ) == "cross-site":
            self._error_page(HTTPStatus.FORBIDDEN, "cross-site request refused")
            return
        form = self._form()
        if form is None:
            return
        path = urlsplit(self.path).path
        if path == "/login":
            self._login(form)
        elif path == "/logout":
            self._redirect("/login", {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/"})
        elif path in ("/actions/cancel", "/actions/retry"):
            self._guard(lambda: self._action(path.rsplit("/", 1)[1], form), "runs")
        else:
            self._error_page(HTTPStatus.NOT_FOUND, "no such action")

    def _form(self) -> dict[str, str] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._error_page(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
            return None
        body = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if body and ctype != "application/x-www-form-urlencoded":
            self._error_page(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send a form (urlencoded)")
            return None
        raw = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
        return {k: v[0] for k, v in raw.items() if v}

    # ------------------------------------------------------------- login/out

    def _login_page(self, status: int = HTTPStatus.OK, message: str = "") -> None:
        self._render(login_page(self.config, status, message))

    def _login(self, form: dict[str, str]) -> None:
        if not self._token_ok(form.get("token")):
            self._login_page(HTTPStatus.FORBIDDEN, "wrong token")
            return
        cookie = f"{COOKIE}={self.config.session_value()}; HttpOnly; SameSite=Strict; Path=/"
        self._redirect("/runs", {"Set-Cookie": cookie})

    # ---------------------------------------------------------------- actions

    def _action(self, action: str, form: dict[str, str]) -> None:
        if not self.config.token:
            self._error_page(
                HTTPStatus.FORBIDDEN,
                "actions are disabled: start the dashboard with --token or RF_DASHBOARD_TOKEN",
            )
            return
        supplied = form.get("token") or self.headers.get("X-Redflow-Token")
        if not self._token_ok(supplied):
            self._error_page(HTTPStatus.FORBIDDEN, "wrong or missing token; nothing was done")
            return
        run_id = form.get("id", "")
        if not run_id:
            self._error_page(HTTPStatus.BAD_REQUEST, "no run id")
            return
        client = self.client
        state = client.get_run(run_id)
        if state is None:
            self._error_page(HTTPStatus.NOT_FOUND, f"run {run_id} not found")
            return
        if action == "cancel":
            reason = form.get("reason") or "canceled from the dashboard"
            accepted = self.server.run_action(lambda: client.cancel_run(run_id, reason))
            after = client.get_run(run_id)
            if not accepted:
                notice = "not-cancelable"
            elif after is not None and after.status is RunStatus.CANCELED:
                notice = "canceled"
            else:
                notice = "cancel-requested"
            self._redirect(f"/run?{urlencode({'id': run_id, 'notice': notice})}")
            return
        try:
            handle = self.server.run_action(lambda: admin.retry_run(client, run_id))
        except ValueError as exc:
            self._error_page(HTTPStatus.CONFLICT, str(exc))
            return
        self._redirect(f"/run?{urlencode({'id': handle.id, 'notice': 'retried'})}")

    # ------------------------------------------------------------------ pages


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
    actions = "actions need the token" if config.token else "actions disabled (no token)"
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
