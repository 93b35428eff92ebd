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
import html
import ipaddress
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import msgspec
import redis

from redflow_mp import admin
from redflow_mp.client import Client
from redflow_mp.codec import RunState, RunStatus, StepState

from ..status import list_supervisors
from . import render

__all__ = ["DashboardConfig", "DashboardServer", "is_loopback", "make_server", "serve"]

T = TypeVar("T")

COOKIE = "rf_dashboard"
MAX_BODY = 64 * 1024
MAX_PAYLOAD_SHOWN = 100_000
STATUSES = [s.value for s in RunStatus]
NOTICES = {
    "canceled": "Run canceled.",
    "cancel-requested": "Cancel requested: the run stops at its next step, or is stopped "
    "after cancel_grace.",
    "not-cancelable": "The run had already finished; nothing was canceled.",
    "retried": "Enqueued as a new run (this one), linked to the old one by retry_of.",
}


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


def e(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape(str(value), quote=True)


def href(path: str, **params: Any) -> str:
    """An escaped link with a query built from the non-empty ``params``."""
    query = urlencode({k: str(v) for k, v in params.items() if v not in (None, "")})
    return e(f"{path}?{query}" if query else path)


def _pretty(value: Any) -> str:
    try:
        text = msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    if len(text) > MAX_PAYLOAD_SHOWN:
        text = text[:MAX_PAYLOAD_SHOWN] + f"\n… ({len(text)} characters in all)"
    return text


def _badge(status: str) -> str:
    return f'<span class="badge s-{e(status)}">{e(status)}</span>'


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center;
flex-wrap:wrap}
header a{color:#cfd6e6;text-decoration:none;margin-right:14px}
header a.on{color:#fff;font-weight:600;border-bottom:2px solid #e04b3c}
header .brand{font-weight:700;color:#fff;letter-spacing:.5px}
header .brand span{color:#e04b3c}
header .target{margin-left:auto;color:#9aa3b5;font-size:12px}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:4px 0 14px;word-break:break-all}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
th,td{text-align:left;padding:6px 9px;border-bottom:1px solid #eceef2;vertical-align:top;
white-space:nowrap}
td.wrap,.facts td{white-space:normal;word-break:break-word}
th{background:#f0f2f5;font-weight:600;font-size:12px;text-transform:uppercase;color:#566}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#fafbfc}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#fff;border:1px solid #dde1e8;padding:10px;overflow:auto;max-height:420px;
white-space:pre-wrap;word-break:break-all}
pre.tb{background:#fff6f5;border-color:#f1c4bf}
a{color:#2456b3}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
background:#e6e8ec;color:#333}
.s-succeeded{background:#dcf3e3;color:#17693a}.s-failed{background:#fbe0dd;color:#a3261a}
.s-running{background:#dde9fb;color:#1d4f9c}.s-queued{background:#eceff3;color:#444}
.s-scheduled{background:#ece4fa;color:#5b3a9c}.s-canceled{background:#fdecd6;color:#8a5208}
form.filters{display:flex;gap:10px;align-items:end;margin-bottom:12px;flex-wrap:wrap}
label{font-size:12px;color:#556;display:flex;flex-direction:column;gap:2px}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c5cad3;border-radius:4px;
background:#fff}
button{background:#2456b3;color:#fff;border-color:#2456b3;cursor:pointer}
button.danger{background:#c0392b;border-color:#c0392b}
.pager{margin:10px 0;display:flex;gap:14px;align-items:center}
.notice{background:#eaf4ff;border:1px solid #b8d6f6;padding:8px 12px;margin-bottom:12px}
.error{background:#fbe0dd;border:1px solid #f1b2aa;padding:8px 12px;margin-bottom:12px}
.muted{color:#7a8393}
.facts td:first-child{width:170px;color:#556;font-weight:600}
.bar{position:relative;height:12px;background:#eef0f4;min-width:160px;border-radius:3px}
.bar span{position:absolute;top:0;bottom:0;border-radius:3px;background:#3b78d8;min-width:2px}
.bar span.failed{background:#c0392b}
.actions{display:flex;gap:18px;flex-wrap:wrap;margin:8px 0 14px}
.actions form{background:#fff;border:1px solid #dde1e8;padding:10px;display:flex;gap:8px;
align-items:end}
.sup{background:#fff;border:1px solid #dde1e8;padding:10px 12px;margin-bottom:14px}
.sup h2{margin-top:0}
.sup .facts{display:flex;gap:18px;flex-wrap:wrap;margin-bottom:8px}
footer{padding:10px 20px;color:#7a8393;font-size:12px}
"""

REFRESH_JS = (
    "(function(){var s=%d*1000;function busy(){var a=document.activeElement;"
    "if(a&&/^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName))return true;"
    "var p=document.querySelectorAll('input[type=password],input[name=reason]');"
    "for(var i=0;i<p.length;i++){if(p[i].value)return true;}return false;}"
    "function tick(){if(busy()){setTimeout(tick,s);}else{location.reload();}}"
    "setTimeout(tick,s);})();"
)


class Page:
    """One HTML response being built."""

    def __init__(self, title: str, nav: str) -> None:
        self.title = title
        self.nav = nav
        self.parts: list[str] = []
        self.status = HTTPStatus.OK

    def add(self, *html_parts: str) -> Page:
        self.parts.extend(html_parts)
        return self


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

    def _render(self, page: Page, query: Mapping[str, str] | None = None) -> None:
        cfg = self.config
        nonce = secrets.token_urlsafe(12)
        refresh = cfg.refresh
        if query is not None and query.get("refresh") == "0":
            refresh = 0
        head = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{e(page.title)} · redflow</title><style>{CSS}</style>",
        ]
        if refresh and page.status == HTTPStatus.OK:
            head.append(f"<script nonce='{nonce}'>{REFRESH_JS % refresh}</script>")
            head.append(f"<noscript><meta http-equiv='refresh' content='{refresh}'></noscript>")
        head.append("</head><body>")
        links = [
            ("runs", "/runs", "Runs"),
            ("workflows", "/workflows", "Workflows"),
            ("queues", "/queues", "Queues"),
            ("supervisors", "/supervisors", "Supervisors"),
        ]
        nav = "".join(
            f'<a href="{u}"{" class=on" if page.nav == k else ""}>{t}</a>' for k, u, t in links
        )
        header = (
            "<header><span class='brand'>red<span>flow</span></span>"
            f"<nav>{nav}</nav><span class='target'>{e(cfg.shown_url)} · prefix "
            f"<code>{e(cfg.prefix)}</code></span></header><main>"
        )
        if refresh:
            params = dict(query or {})
            params["refresh"] = "0"
            toggle = (
                f"auto-refresh every {refresh} s "
                f"(<a href='{href(urlsplit(self.path).path, **params)}'>pause</a>)"
            )
        elif cfg.refresh:
            params = {k: v for k, v in (query or {}).items() if k != "refresh"}
            toggle = (
                f"auto-refresh paused (<a href='{href(urlsplit(self.path).path, **params)}'>"
                "resume</a>)"
            )
        else:
            toggle = "auto-refresh off"
        footer = (
            f"</main><footer>rendered {e(time.strftime('%Y-%m-%d %H:%M:%S'))} · {toggle}"
            f"{' · actions need the token' if cfg.token else ' · actions disabled (no token)'}"
            "</footer></body></html>"
        )
        self._send(page.status, "".join([*head, header, *page.parts, footer]), nonce=nonce)

    def _error_page(self, status: int, message: str, nav: str = "") -> None:
        page = Page(HTTPStatus(status).phrase, nav)
        page.status = HTTPStatus(status)
        page.add(f"<h1>{e(HTTPStatus(status).phrase)}</h1><div class='error'>{e(message)}</div>")
        self._render(page)

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
        routes: dict[str, tuple[str, Callable[[dict[str, str]], None]]] = {
            "/runs": ("runs", self.page_runs),
            "/run": ("runs", self.page_run),
            "/workflows": ("workflows", self.page_workflows),
            "/queues": ("queues", self.page_queues),
            "/supervisors": ("supervisors", self.page_supervisors),
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
        self._guard(lambda: fn(query), nav)

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
        page = Page("Sign in", "")
        page.status = HTTPStatus(status)
        if not self.config.token:
            page.add(
                "<h1>No sign-in needed</h1><p>This dashboard has no token; "
                "<a href='/runs'>open the runs</a>.</p>"
            )
        else:
            page.add(
                "<h1>Sign in</h1>",
                f"<div class='error'>{e(message)}</div>" if message else "",
                "<p>This dashboard needs its token (<code>--token</code> or "
                "<code>RF_DASHBOARD_TOKEN</code>).</p>"
                "<form method='post' action='/login' class='filters'>"
                "<label>token <input type='password' name='token' autocomplete='current-password'"
                " required></label><button type='submit'>Sign in</button></form>",
            )
        self._render(page)

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

    def page_runs(self, q: dict[str, str]) -> None:
        cfg = self.config
        workflow = q.get("workflow", "").strip() or None
        status = q.get("status", "") or None
        try:
            page_no = max(1, int(q.get("page", "1")))
        except ValueError:
            page_no = 1
        page = Page("Runs", "runs")
        names = [m.name for m in self.client.list_workflows()]
        page.add(self._filter_form(workflow, status, names))
        if status is not None and status not in STATUSES:
            page.status = HTTPStatus.BAD_REQUEST
            page.add(f"<div class='error'>unknown status {e(status)}</div>")
            self._render(page, q)
            return
        size = cfg.page_size
        runs = self.client.list_runs(
            workflow=workflow, status=status, limit=size + 1, offset=(page_no - 1) * size
        )
        more = len(runs) > size
        runs = runs[:size]
        title = (
            "Runs" + (f" of {workflow}" if workflow else "") + (f" ({status})" if status else "")
        )
        page.title = title
        page.add(f"<h1>{e(title)}</h1>")
        if runs:
            now = self.client.server_time_ms()
            page.add(self._runs_table(runs, now))
        else:
            page.add("<p class='muted'>No runs match.</p>")
        base = {"workflow": workflow, "status": status}
        pager = [f"<span>page {page_no}</span>"]
        if page_no > 1:
            pager.insert(0, f"<a href='{href('/runs', **base, page=page_no - 1)}'>← newer</a>")
        if more:
            pager.append(f"<a href='{href('/runs', **base, page=page_no + 1)}'>older →</a>")
        page.add(f"<div class='pager'>{''.join(pager)}</div>")
        self._render(page, q)

    def _filter_form(self, workflow: str | None, status: str | None, names: Sequence[str]) -> str:
        options = "".join(
            f"<option value='{e(s)}'{' selected' if s == status else ''}>{e(s)}</option>"
            for s in STATUSES
        )
        datalist = "".join(f"<option value='{e(n)}'>" for n in names)
        return (
            "<form class='filters' method='get' action='/runs'>"
            "<label>workflow <input name='workflow' list='wf-names' "
            f"value='{e(workflow or '')}' placeholder='any'></label>"
            f"<datalist id='wf-names'>{datalist}</datalist>"
            "<label>status <select name='status'><option value=''>any</option>"
            f"{options}</select></label>"
            "<button type='submit'>Filter</button> <a href='/runs'>clear</a></form>"
        )

    def _runs_table(self, runs: Sequence[RunState], now: int) -> str:
        rows = []
        for r in runs:
            rows.append(
                "<tr>"
                f"<td class='mono'><a href='{href('/run', id=r.id)}'>{e(r.id)}</a></td>"
                f"<td><a href='{href('/runs', workflow=r.workflow)}'>{e(r.workflow)}</a></td>"
                f"<td>{_badge(r.status.value)}</td>"
                f"<td class='num'>{r.attempt}/{r.max_attempts}</td>"
                f"<td>{e(render.fmt_time(r.created_at))}</td>"
                f"<td>{e(render.fmt_time(r.started_at))}</td>"
                f"<td class='num'>{e(render.fmt_duration(render.run_duration_ms(r, now)))}</td>"
                f"<td>{e(r.queue)}</td></tr>"
            )
        return (
            "<table class='runs'><thead><tr><th>run</th><th>workflow</th><th>status</th>"
            "<th>attempt</th><th>created</th><th>started</th><th>duration</th><th>queue</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def page_run(self, q: dict[str, str]) -> None:
        run_id = q.get("id", "")
        if not run_id:
            self._error_page(HTTPStatus.BAD_REQUEST, "no run id given", "runs")
            return
        client = self.client
        state = client.get_run(run_id)
        if state is None:
            self._error_page(
                HTTPStatus.NOT_FOUND,
                f"run {run_id} not found (unknown id, or removed by retention)",
                "runs",
            )
            return
        steps = client.get_run_steps(run_id) or []
        raw_retry = client.redis.hget(client.keys.run(run_id), "retryOf")
        retry_of = raw_retry.decode("utf-8", "replace") if isinstance(raw_retry, bytes) else None
        now = client.server_time_ms()
        page = Page(f"Run {state.id}", "runs")
        notice = NOTICES.get(q.get("notice", ""))
        if notice:
            page.add(f"<div class='notice'>{e(notice)}</div>")
        page.add(
            f"<h1>Run <span class='mono'>{e(state.id)}</span> {_badge(state.status.value)}</h1>"
        )
        page.add(self._actions(state))
        page.add(self._facts(state, retry_of, now))
        if state.error is not None:
            err = state.error
            page.add(
                "<h2>Error</h2>",
                f"<div class='error'><strong>{e(err.type)}</strong>: {e(err.message)}"
                f"{'' if err.retryable else ' <span class=muted>(not retryable)</span>'}</div>",
            )
            if err.traceback:
                page.add(f"<pre class='tb'>{e(err.traceback)}</pre>")
        page.add("<h2>Steps</h2>", self._timeline(state, steps, now))
        page.add(f"<h2>Input</h2><pre>{e(_pretty(state.input))}</pre>")
        if state.status is RunStatus.SUCCEEDED or state.output is not None:
            page.add(f"<h2>Output</h2><pre>{e(_pretty(state.output))}</pre>")
        self._render(page, q)

    def _facts(self, s: RunState, retry_of: str | None, now: int) -> str:
        def run_link(rid: str) -> str:
            return f"<a class='mono' href='{href('/run', id=rid)}'>{e(rid)}</a>"

        rows: list[tuple[str, str]] = [
            ("workflow", f"<a href='{href('/runs', workflow=s.workflow)}'>{e(s.workflow)}</a>"),
            ("queue", e(s.queue)),
            ("attempt", f"{s.attempt} of {s.max_attempts}"),
            ("created", e(render.fmt_time(s.created_at))),
        ]
        if s.available_at and s.status in (RunStatus.SCHEDULED, RunStatus.QUEUED):
            rows.append(
                (
                    "available",
                    e(
                        f"{render.fmt_time(s.available_at)} "
                        f"({render.fmt_relative(s.available_at, now)})"
                    ),
                )
            )
        rows += [
            ("started", e(render.fmt_time(s.started_at))),
            ("finished", e(render.fmt_time(s.finished_at))),
            ("duration", e(render.fmt_duration(render.run_duration_ms(s, now)))),
        ]
        if s.timeout:
            rows.append(("timeout", e(f"{s.timeout:g} s")))
        if s.cancel_requested_at:
            rows.append(("cancel requested", e(render.fmt_time(s.cancel_requested_at))))
        if s.cancel_reason:
            rows.append(("cancel reason", e(s.cancel_reason)))
        if s.idempotency_key:
            rows.append(("idempotency key", f"<code>{e(s.idempotency_key)}</code>"))
        if s.parent_run_id:
            rows.append(("parent run", run_link(s.parent_run_id)))
        if retry_of:
            rows.append(("retry of", run_link(retry_of)))
        if s.cron_id:
            rows.append(("cron", f"<code>{e(s.cron_id)}</code>"))
        if s.crash_count:
            rows.append(("crashes", e(f"{s.crash_count} (last: {s.last_crash or '?'})")))
        body = "".join(f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in rows)
        return f"<table class='facts'>{body}</table>"

    def _actions(self, s: RunState) -> str:
        cancelable = not s.status.terminal
        retryable = s.status in (RunStatus.FAILED, RunStatus.CANCELED)
        if not (cancelable or retryable):
            return ""
        if not self.config.token:
            return (
                "<p class='muted'>Actions are disabled: start the dashboard with "
                "<code>--token</code> or <code>RF_DASHBOARD_TOKEN</code>.</p>"
            )
        token_field = (
            "<label>token <input type='password' name='token' autocomplete='current-password' "
            "required></label>"
        )
        forms = []
        if cancelable:
            forms.append(
                "<form method='post' action='/actions/cancel' class='cancel'>"
                f"<input type='hidden' name='id' value='{e(s.id)}'>"
                "<label>reason <input name='reason' placeholder='optional'></label>"
                f"{token_field}<button type='submit' class='danger'>Cancel run</button></form>"
            )
        if retryable:
            forms.append(
                "<form method='post' action='/actions/retry' class='retry'>"
                f"<input type='hidden' name='id' value='{e(s.id)}'>"
                f"{token_field}<button type='submit'>Retry as a new run</button></form>"
            )
        return f"<div class='actions'>{''.join(forms)}</div>"

    def _timeline(self, s: RunState, steps: Sequence[StepState], now: int) -> str:
        if not steps:
            return "<p class='muted'>No steps recorded.</p>"
        starts = [x.started_at for x in steps if x.started_at]
        ends = [x.finished_at for x in steps if x.finished_at]
        t0 = min([*starts, *([s.started_at] if s.started_at else [])], default=0)
        t1 = max([*ends, s.finished_at or now], default=0)
        span = max(1, t1 - t0)
        rows = []
        for i, st in enumerate(steps, 1):
            bar = ""
            if st.started_at and st.finished_at and t0:
                left = 100.0 * (st.started_at - t0) / span
                width = 100.0 * (st.finished_at - st.started_at) / span
                cls = " class='failed'" if st.status.value == "failed" else ""
                bar = (
                    f"<div class='bar'><span{cls} style='left:{left:.2f}%;"
                    f"width:{max(width, 0.5):.2f}%'></span></div>"
                )
            detail = ""
            if st.error is not None:
                detail = f"<strong>{e(st.error.type)}</strong>: {e(st.error.message)}"
                if st.error.traceback:
                    detail += (
                        f"<details><summary>traceback</summary><pre class='tb'>"
                        f"{e(st.error.traceback)}</pre></details>"
                    )
            elif st.output is not None:
                preview = render.fmt_json(st.output, 120)
                detail = (
                    f"<details><summary class='mono'>{e(preview)}</summary>"
                    f"<pre>{e(_pretty(st.output))}</pre></details>"
                )
            rows.append(
                f"<tr class='step'><td class='num'>{i}</td><td>{e(st.name)}</td>"
                f"<td>{_badge(st.status.value)}</td><td class='num'>{st.attempt}</td>"
                f"<td>{e(render.fmt_time(st.started_at))}</td>"
                f"<td class='num'>{e(render.fmt_duration(render.step_duration_ms(st)))}</td>"
                f"<td>{bar}</td><td class='wrap'>{detail}</td></tr>"
            )
        return (
            "<table class='steps'><thead><tr><th>#</th><th>step</th><th>status</th>"
            "<th>attempt</th><th>started</th><th>duration</th><th>timeline</th><th>result</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

    def page_workflows(self, q: dict[str, str]) -> None:
        stats = admin.workflow_stats(self.client)
        now = self.client.server_time_ms()
        page = Page("Workflows", "workflows").add("<h1>Workflows</h1>")
        if not stats:
            page.add(
                "<p class='muted'>No workflows synced yet (a supervisor syncs its registry "
                "when it starts).</p>"
            )
            self._render(page, q)
            return
        rows = []
        for s in stats:
            m = s.meta
            attempts = m.retries.max_attempts if m.retries else 1
            cron = (
                "<br>".join(
                    f"<code>{e(c.expression)}</code> {e(c.timezone)} · next "
                    f"{e(render.fmt_time(c.next_fire_at))} "
                    f"<span class='muted'>({e(render.fmt_relative(c.next_fire_at, now))})</span>"
                    for c in s.cron
                )
                or "<span class='muted'>-</span>"
            )
            rows.append(
                f"<tr><td><a href='{href('/runs', workflow=m.name)}'>{e(m.name)}</a></td>"
                f"<td>{e(m.queue)}</td><td class='num'>{m.max_concurrency}</td>"
                f"<td class='num'>{e(attempts)}</td><td class='num'>{s.running}</td>"
                f"<td class='num'>{s.queued}</td><td class='num'>{s.parked}</td>"
                f"<td>{e(m.app)}</td><td>{e(render.fmt_time(m.updated_at))}</td>"
                f"<td class='wrap'>{cron}</td></tr>"
            )
        page.add(
            "<table class='workflows'><thead><tr><th>workflow</th><th>queue</th>"
            "<th>max conc.</th><th>attempts</th><th>running</th><th>queued</th><th>parked</th>"
            "<th>app</th><th>synced</th><th>cron</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
        self._render(page, q)

    def page_queues(self, q: dict[str, str]) -> None:
        stats = admin.queue_stats(self.client)
        page = Page("Queues", "queues").add("<h1>Queues</h1>")
        if not stats:
            page.add("<p class='muted'>No queues yet.</p>")
        else:
            rows = "".join(
                f"<tr><td>{e(s.name)}</td><td class='num'>{s.ready}</td>"
                f"<td class='num'>{s.processing}</td><td class='num'>{s.scheduled}</td>"
                f"<td class='num'>{e(render.fmt_duration(s.oldest_ready_age_ms))}</td></tr>"
                for s in stats
            )
            page.add(
                "<table class='queues'><thead><tr><th>queue</th><th>ready</th>"
                "<th>processing</th><th>scheduled</th><th>oldest waiting</th></tr></thead>"
                f"<tbody>{rows}</tbody></table>"
            )
        self._render(page, q)

    def page_supervisors(self, q: dict[str, str]) -> None:
        sups = list_supervisors(self.client)
        now = self.client.server_time_ms()
        page = Page("Supervisors", "supervisors").add("<h1>Supervisors</h1>")
        if not sups:
            page.add(
                "<p class='muted'>No live supervisors (none refreshed its status record "
                "recently).</p>"
            )
        for s in sups:
            facts = [
                ("app", e(s.app)),
                ("mode", e(s.mode)),
                ("cron leader", "yes" if s.leader else "no"),
                ("procs", str(s.procs)),
                ("queues", e(", ".join(s.queues))),
                ("rss", e(render.fmt_bytes(s.rss))),
                ("up", e(render.fmt_duration(now - s.started_at))),
                ("seen", e(render.fmt_relative(s.updated_at, now))),
                ("version", e(s.version or "-")),
            ]
            kids = "".join(
                f"<tr><td class='num'>{c.slot}</td><td class='num'>{c.pid}</td>"
                f"<td>{e(c.state)}</td><td class='mono'>"
                + (f"<a href='{href('/run', id=c.run_id)}'>{e(c.run_id)}</a>" if c.run_id else "-")
                + f"</td><td>{e(c.workflow or '-')}</td>"
                f"<td class='num'>{e(render.fmt_duration(s.updated_at - c.run_started_at) if c.run_started_at else '-')}</td>"  # noqa: E501
                f"<td class='num'>{e(render.fmt_bytes(c.rss))}</td>"
                f"<td class='num'>{c.cpu_percent:.1f}%</td><td class='num'>{c.runs_done}</td>"
                f"<td class='num'>{c.restarts}</td></tr>"
                for c in s.children
            )
            page.add(
                f"<section class='sup'><h2 class='mono'>{e(s.id)}</h2><div class='facts'>",
                "".join(f"<span><span class='muted'>{k}</span> {v}</span>" for k, v in facts),
                "</div><table class='children'><thead><tr><th>slot</th><th>pid</th><th>state</th>"
                "<th>run</th><th>workflow</th><th>run for</th><th>rss</th><th>cpu</th>"
                "<th>runs done</th><th>restarts</th></tr></thead>"
                f"<tbody>{kids}</tbody></table></section>",
            )
        self._render(page, q)


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
