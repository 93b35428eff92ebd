"""The dashboard as a WSGI application: routing, the security checks, the actions.

:class:`DashboardApp` is a plain WSGI callable (PEP 3333) over a
:class:`redflow_mp.Client`; ``dashboard.make_app`` builds one for mounting in a
host application, and ``redflow dashboard`` serves one on a threaded standard
library server. The pages themselves come from ``pages.py`` (with ``runpage.py``
and ``markup.py``).

Mounting: the app reads its mount path from ``SCRIPT_NAME`` and its page from
``PATH_INFO`` on every request, so every link, form action, redirect and the
sign-in cookie's ``Path`` stay under the prefix it is mounted at (``/admin/redflow``
gives ``/admin/redflow/runs``, a cookie with ``Path=/admin/redflow``).

Security rules, in the order a request is checked:

- Host: with a ``host_check`` (the stand-alone server on a loopback bind uses
  :func:`is_loopback`), a request whose ``Host`` names another host is refused
  (421): a DNS-rebinding page cannot read the dashboard. Mounted, the default is
  no check: the host application owns its Host policy (Django's
  ``ALLOWED_HOSTS``, a proxy's server names).
- Reading: with ``sign_in``, every page but ``/login`` and ``/healthz`` needs the
  token: a sign-in form starts a session, a random id kept in this process, sent
  as an HttpOnly, SameSite=Strict cookie (Path = the mount path, Secure over
  HTTPS or ``X-Forwarded-Proto: https``, Max-Age = the absolute limit); scripts may send
  ``Authorization: Bearer <token>``. A session ends after ``session_idle``
  seconds unused (2 h), ``session_max`` after sign-in (12 h), at logout (the id
  is forgotten: a copied cookie stops working) and when the process ends.
  Mounted, the default is no sign-in: the host's own auth sits in front.
- Guessing: every token check that fails (sign-in form, Bearer or
  ``X-Redflow-Token`` header, an action's token) counts against the client's
  address (an IPv6 one by its /64) and against all clients (:class:`LoginLimits`):
  past the free failures each one doubles a wait (1 s up to 15 min per address,
  up to 1 min in all), during which every token check of that address (or every
  one) is answered 429 with ``Retry-After``, the right token too. Sessions
  already signed in are not affected. Tokens are compared as SHA-256 digests with
  :func:`hmac.compare_digest` (no timing by length or content), and are at least
  16 characters long.
- Actions (cancel, retry, resume) change state only by POST, never by GET, and each one
  needs the token itself in the form (field ``token``) or in an
  ``X-Redflow-Token`` header, compared with :func:`hmac.compare_digest`. No cookie
  (ours or the host's) ever authorises one, so a cross-site form cannot forge one
  (CSRF); a POST whose ``Origin`` is not the request's own ``Host``, or that the
  browser marks ``Sec-Fetch-Site: cross-site``, is refused as well. Without a
  token, or when read-only, there are no actions at all.
- Output: everything that comes from Redis or the request is escaped
  (``pages.e``); a Content-Security-Policy allows no script but the page's own
  refresh timer (by a per-response nonce), no framing, forms only to the same
  origin. Redis URLs are shown masked.

Invariants: no state between requests but the settings, the sessions and the
failure counts, in this process's memory behind a lock (bounded: 1,000 sessions,
10,000 addresses; a server that forks workers gives each its own, so a sign-in
holds in the worker that made it); no thread of its own (an
action runs on the request's thread; the client keeps a connection per thread and
closes it when the thread ends), so creating the app before a server forks is safe.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import redis

from redflow_mp import admin, queries
from redflow_mp.client import Client
from redflow_mp.codec import RunStatus
from redflow_mp.errors import TRANSIENT_ERRORS, RunNotResumableError

from .pages import (
    Page,
    View,
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
from .session import (
    SESSION_IDLE,
    SESSION_MAX,
    LoginLimits,
    SignIns,
    Throttle,
    client_key,
    run_id_refusal,
)

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

__all__ = [
    "COOKIE",
    "MAX_BODY",
    "MIN_TOKEN",
    "SESSION_IDLE",
    "SESSION_MAX",
    "AppSettings",
    "DashboardApp",
    "LoginLimits",
    "is_loopback",
]

log = logging.getLogger(__name__)

PageFunction = Callable[[Client, View, dict[str, str]], Page]

COOKIE = "rf_dashboard"
MAX_BODY = 64 * 1024
MIN_TOKEN = 16  # characters (``openssl rand -hex 16`` gives 32)
ACTIONS = ("/actions/cancel", "/actions/retry", "/actions/resume")
ROUTES: dict[str, tuple[str, PageFunction]] = {
    "/runs": ("runs", runs_page),
    "/run": ("runs", run_page),
    "/workflows": ("workflows", workflows_page),
    "/queues": ("queues", queues_page),
    "/supervisors": ("supervisors", supervisors_page),
}
# Characters left as they are in a mount path put into links, Location and the
# cookie's Path: RFC 3986 path characters minus ";" and "," (cookie attribute syntax).
_PATH_SAFE = "/-._~!$&'()*+=:@"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port (``[::1]:8080`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0]


#: Redis trouble, answered 503 (never a 500): redis-py's errors, which include
#: the library's WrongTypeError and RedisBusyError (ResponseError subclasses),
#: and the library's other transient ones (RedisReadOnlyError,
#: RedisOutOfMemoryError, RedisClusterDownError: nothing was changed).
_REDIS_TROUBLE: tuple[type[Exception], ...] = (redis.RedisError, *TRANSIENT_ERRORS)


@dataclass(frozen=True)
class AppSettings:
    """What the application allows and shows (validated when built)."""

    token: str | None = None
    read_only: bool = False
    sign_in: bool = False
    host_check: Callable[[str], bool] | None = None
    shown_url: str = ""
    prefix: str = "redflow"
    refresh: int = 5
    page_size: int = 25
    # Why there are no actions (when there are none), shown on the run page.
    actions_off_reason: str = "this dashboard is mounted read-only"
    session_idle: float = SESSION_IDLE
    session_max: float = SESSION_MAX
    login_limits: LoginLimits = field(default_factory=LoginLimits)

    def __post_init__(self) -> None:
        if self.token is not None and not isinstance(self.token, str):
            raise TypeError(f"token must be a str or None, not {type(self.token).__name__}")
        if self.token is not None and len(self.token) < MIN_TOKEN:
            raise ValueError(
                f"the dashboard token (--token, RF_DASHBOARD_TOKEN, make_app's token=) has "
                f"{len(self.token)} characters: it must be at least {MIN_TOKEN} characters "
                "long (make one with: openssl rand -hex 16)"
            )
        if self.sign_in and not self.token:
            raise ValueError(
                f"sign_in=True needs a token: pass token='...' ({MIN_TOKEN}+ characters)"
            )
        if not self.read_only and not self.token:
            raise ValueError(
                f"actions (cancel, retry, resume) need a token: pass token='...' "
                f"({MIN_TOKEN}+ characters), or read_only=True for a dashboard without actions"
            )
        for name in ("session_idle", "session_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be > 0 seconds, not {value!r}")
        if isinstance(self.page_size, bool) or not 1 <= self.page_size <= 500:
            raise ValueError(f"page size must be between 1 and 500, not {self.page_size!r}")
        if isinstance(self.refresh, bool) or self.refresh < 0:
            raise ValueError(f"refresh must be >= 0 seconds, not {self.refresh!r}")
        if self.host_check is not None and not callable(self.host_check):
            raise TypeError(
                "host_check must be None or a function of the host name returning a bool, "
                f"not {self.host_check!r}"
            )

    @property
    def actions(self) -> bool:
        """Whether cancel, retry and resume exist at all."""
        return bool(self.token) and not self.read_only


class _Request:
    """The parts of a WSGI environ the app reads."""

    __slots__ = ("base", "environ", "method", "path")

    def __init__(self, environ: WSGIEnvironment) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.base = _quote_path(str(environ.get("SCRIPT_NAME", ""))).rstrip("/")
        self.path = str(environ.get("PATH_INFO", "")) or "/"

    def header(self, name: str) -> str:
        return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), ""))

    def query(self) -> dict[str, str]:
        """The query's first value per name (ValueError past 50 fields)."""
        raw = _latin1_to_text(str(self.environ.get("QUERY_STRING", "")))
        parsed = parse_qs(raw, keep_blank_values=True, max_num_fields=50)
        return {k: v[0] for k, v in parsed.items() if v}

    @property
    def cookie_path(self) -> str:
        return self.base or "/"


@dataclass
class _Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]]


def _latin1_to_text(value: str) -> str:
    """A WSGI string (bytes as latin-1, PEP 3333) as the UTF-8 text it carries."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it
        return value


def _quote_path(path: str) -> str:
    """A decoded WSGI path (``SCRIPT_NAME``, ``PATH_INFO``) as it goes into a URL."""
    return quote(_latin1_to_text(path), safe=_PATH_SAFE)


def _security_headers(nonce: str) -> list[tuple[str, str]]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return [
        (
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]


class DashboardApp:
    """The dashboard as a WSGI callable; see the module docstring for its rules."""

    def __init__(self, client: Client, settings: AppSettings) -> None:
        self.client = client
        self.settings = settings
        self._sessions = SignIns(settings.session_idle, settings.session_max)
        self._limiter = Throttle(settings.login_limits)
        self._view = View(
            base="",
            shown_url=settings.shown_url,
            prefix=settings.prefix,
            refresh=settings.refresh,
            page_size=settings.page_size,
            actions=settings.actions,
            has_token=bool(settings.token),
            actions_off_note=f"Actions are disabled: {settings.actions_off_reason}.",
            footer_note="actions need the token" if settings.actions else "actions disabled",
            sign_out=settings.sign_in,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        req = _Request(environ)
        resp = self._respond(req)
        headers = [*resp.headers, ("Content-Length", str(len(resp.body)))]
        start_response(f"{resp.status} {HTTPStatus(resp.status).phrase}", headers)
        return [] if req.method == "HEAD" else [resp.body]

    # -------------------------------------------------------------- plumbing

    def _send(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/html; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
        nonce: str = "",
    ) -> _Response:
        return _Response(
            int(status),
            body.encode("utf-8"),
            [*_security_headers(nonce), ("Content-Type", content_type), *headers],
        )

    def _redirect(
        self, req: _Request, path: str, headers: Iterable[tuple[str, str]] = ()
    ) -> _Response:
        location = req.base + path
        return self._send(
            HTTPStatus.SEE_OTHER,
            f'<a href="{e(location)}">continue</a>',
            headers=[("Location", location), *headers],
        )

    def _page(
        self,
        req: _Request,
        page: Page,
        headers: Iterable[tuple[str, str]] = (),
        signed_in: bool = True,  # False: no sign-out button (the sign-in page)
    ) -> _Response:
        nonce = secrets.token_urlsafe(12)
        view = replace(self._view, base=req.base, sign_out=self._view.sign_out and signed_in)
        document = frame(page, view, _quote_path(req.path), nonce)
        return self._send(page.status, document, nonce=nonce, headers=headers)

    def _error(
        self,
        req: _Request,
        status: int,
        message: str,
        nav: str = "",
        headers: Iterable[tuple[str, str]] = (),
    ) -> _Response:
        return self._page(req, error_page(status, message, nav), headers)

    def _guard(self, req: _Request, nav: str, fn: Callable[[], _Response]) -> _Response:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            msg = f"Redis at {self.settings.shown_url} is unreachable: {exc}"
            return self._error(req, HTTPStatus.SERVICE_UNAVAILABLE, msg, nav)
        except _REDIS_TROUBLE as exc:
            return self._error(req, HTTPStatus.SERVICE_UNAVAILABLE, f"Redis error: {exc}", nav)
        except Exception:
            log.exception("redflow dashboard: %s %s failed", req.method, req.base + req.path)
            return self._error(req, 500, "internal error (see the dashboard's log)", nav)

    def _token_ok(self, candidate: str | bytes | None) -> bool:
        token = self.settings.token
        if not token or not candidate:
            return False
        given = candidate if isinstance(candidate, bytes) else candidate.encode("utf-8")
        # Digests: equal lengths, so the time taken says nothing of the token's length.
        digest = hashlib.sha256
        return hmac.compare_digest(digest(given).digest(), digest(token.encode()).digest())

    def _limited(self, req: _Request, nav: str = "") -> _Response | None:
        """A 429 (with ``Retry-After``) while this client may not try a token."""
        wait = self._limiter.wait(client_key(req.environ), time.monotonic())
        if wait <= 0:
            return None
        seconds = str(max(1, math.ceil(wait)))
        message = f"too many failed sign-ins: try again in {seconds} s"
        retry = [("Retry-After", seconds)]
        if req.path == "/login":
            view = replace(self._view, base=req.base)
            page = login_page(view, HTTPStatus.TOO_MANY_REQUESTS, message)
            return self._page(req, page, retry, signed_in=False)
        return self._error(req, HTTPStatus.TOO_MANY_REQUESTS, message, nav, retry)

    def _attempt(self, req: _Request, candidate: str | bytes | None) -> bool:
        """Check a token a client sent, counting a failure against it."""
        ok = self._token_ok(candidate)
        if ok:
            self._limiter.succeeded(client_key(req.environ))
        else:
            self._limiter.failed(client_key(req.environ), time.monotonic())
        return ok

    def _header_token(self, req: _Request, name: str) -> bytes:
        # Header values are bytes carried as latin-1 (PEP 3333): compare those bytes.
        return req.header(name).strip().encode("latin-1", "replace")

    def _cookie(self, req: _Request) -> str | None:
        # By hand, not http.cookies: one odd cookie of the host application must
        # not hide ours.
        for piece in req.header("Cookie").split(";"):
            name, sep, value = piece.strip().partition("=")
            if sep and name == COOKIE:
                return value.strip().strip('"')
        return None

    def _read_refused(self, req: _Request) -> _Response | None:
        """None when the request may read; else the sign-in page (401) or a 429."""
        if not self.settings.sign_in:
            return None
        sid = self._cookie(req)
        if sid and self._sessions.use(sid, time.monotonic()):
            return None
        auth = req.header("Authorization")
        bearer = auth[7:].strip() if auth.startswith("Bearer ") else ""
        candidate = bearer.encode("latin-1", "replace") or self._header_token(
            req, "X-Redflow-Token"
        )
        if candidate:
            limited = self._limited(req)
            if limited is not None:
                return limited
            if self._attempt(req, candidate):
                return None
        return self._login_page(req, HTTPStatus.UNAUTHORIZED)

    # ---------------------------------------------------------------- routes

    def _respond(self, req: _Request) -> _Response:
        check = self.settings.host_check
        if check is not None and not check(host_name(req.header("Host"))):
            return self._error(req, HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header")
        if req.method in ("GET", "HEAD"):
            return self._get(req)
        if req.method == "POST":
            return self._post(req)
        return self._error(
            req,
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"method {req.method} not allowed",
            headers=[("Allow", "GET, HEAD, POST")],
        )

    def _get(self, req: _Request) -> _Response:
        path = req.path
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, "", content_type="image/x-icon")
        if path == "/healthz":
            return self._send(HTTPStatus.OK, "ok\n", content_type="text/plain; charset=utf-8")
        if path == "/login":
            return self._login_page(req)
        refused = self._read_refused(req)
        if refused is not None:
            return refused
        if path == "/":
            return self._redirect(req, "/runs")
        if path in (*ACTIONS, "/logout"):
            return self._error(
                req,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "actions are POST only",
                headers=[("Allow", "POST")],
            )
        route = ROUTES.get(path)
        if route is None:
            return self._error(req, HTTPStatus.NOT_FOUND, "no such page")
        nav, fn = route
        try:
            query = req.query()
        except ValueError:
            return self._error(req, HTTPStatus.BAD_REQUEST, "too many query parameters", nav)
        view = replace(self._view, base=req.base)
        return self._guard(req, nav, lambda: self._page(req, fn(self.client, view, query)))

    def _cross_site(self, req: _Request) -> bool:
        origin = req.header("Origin")
        host = req.header("Host").lower()
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != host:
            return True
        return req.header("Sec-Fetch-Site") == "cross-site"

    def _post(self, req: _Request) -> _Response:
        if self._cross_site(req):
            return self._error(req, HTTPStatus.FORBIDDEN, "cross-site request refused")
        form = self._form(req)
        if isinstance(form, _Response):
            return form
        path = req.path
        if path == "/login":
            return self._login(req, form)
        if path == "/logout":
            sid = self._cookie(req)
            if sid:
                self._sessions.end(sid)
            clear = f"{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path={req.cookie_path}"
            return self._redirect(req, "/login", [("Set-Cookie", clear)])
        if path in ACTIONS:
            action = path.rsplit("/", 1)[1]
            return self._guard(req, "runs", lambda: self._action(req, action, form))
        return self._error(req, HTTPStatus.NOT_FOUND, "no such action")

    def _form(self, req: _Request) -> dict[str, str] | _Response:
        environ = req.environ
        if req.header("Transfer-Encoding"):
            return self._error(
                req, HTTPStatus.LENGTH_REQUIRED, "send the form with a Content-Length"
            )
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            return self._error(req, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        ctype = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
        if body and ctype != "application/x-www-form-urlencoded":
            return self._error(req, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send a form (urlencoded)")
        try:
            raw = parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20
            )
        except ValueError:
            return self._error(req, HTTPStatus.BAD_REQUEST, "too many form fields")
        return {k: v[0] for k, v in raw.items() if v}

    # -------------------------------------------------------------- sign-in

    def _login_page(
        self, req: _Request, status: int = HTTPStatus.OK, message: str = ""
    ) -> _Response:
        view = replace(self._view, base=req.base)
        return self._page(req, login_page(view, status, message), signed_in=False)

    def _login(self, req: _Request, form: dict[str, str]) -> _Response:
        limited = self._limited(req)
        if limited is not None:
            return limited
        if not self._attempt(req, form.get("token")):
            return self._login_page(req, HTTPStatus.FORBIDDEN, "wrong token")
        sid = self._sessions.start(time.monotonic())
        cookie = (
            f"{COOKIE}={sid}; Max-Age={int(self.settings.session_max)}; HttpOnly; "
            f"SameSite=Strict; Path={req.cookie_path}"
        )
        # Behind a TLS proxy the scheme is the proxy's word (trusting it is safe
        # here: a spoofed one only keeps the spoofer's own cookie off plain HTTP).
        forwarded = req.header("X-Forwarded-Proto").split(",")[0].strip().lower()
        if req.environ.get("wsgi.url_scheme") == "https" or forwarded == "https":
            cookie += "; Secure"
        return self._redirect(req, "/runs", [("Set-Cookie", cookie)])

    # -------------------------------------------------------------- actions

    def _cancel(self, req: _Request, run_id: str, reason: str) -> _Response:
        client = self.client
        try:
            accepted = client.cancel_run(run_id, reason)
        except ValueError as exc:  # a reason over the limit
            return self._error(req, HTTPStatus.BAD_REQUEST, str(exc), "runs")
        after = queries.get_run_any(client, run_id)
        if not accepted:
            notice = "not-cancelable"
        elif after is not None and after.status is RunStatus.CANCELED:
            notice = "canceled"
        else:
            notice = "cancel-requested"
        return self._redirect(req, f"/run?{urlencode({'id': run_id, 'notice': notice})}")

    def _action(self, req: _Request, action: str, form: dict[str, str]) -> _Response:
        cfg = self.settings
        if not cfg.actions:
            return self._error(
                req,
                HTTPStatus.FORBIDDEN,
                f"actions are disabled: {cfg.actions_off_reason}; nothing was done",
                "runs",
            )
        supplied = form.get("token") or self._header_token(req, "X-Redflow-Token")
        limited = self._limited(req, "runs") if supplied else None
        if limited is not None:
            return limited
        if not supplied or not self._attempt(req, supplied):
            return self._error(
                req, HTTPStatus.FORBIDDEN, "wrong or missing token; nothing was done", "runs"
            )
        run_id = form.get("id", "")
        if not run_id:
            return self._error(req, HTTPStatus.BAD_REQUEST, "no run id", "runs")
        refusal = run_id_refusal(run_id)
        if refusal is not None:
            return self._error(req, HTTPStatus.BAD_REQUEST, refusal, "runs")
        client = self.client
        if queries.get_run_any(client, run_id) is None:
            return self._error(req, HTTPStatus.NOT_FOUND, f"run {run_id} not found", "runs")
        if action == "cancel":
            return self._cancel(req, run_id, form.get("reason") or "canceled from the dashboard")
        if action == "resume":
            try:
                client.resume_run(run_id)
            except RunNotResumableError as exc:
                return self._error(req, HTTPStatus.CONFLICT, str(exc), "runs")
            return self._redirect(req, f"/run?{urlencode({'id': run_id, 'notice': 'resumed'})}")
        try:
            handle = admin.retry_run(client, run_id)
        except ValueError as exc:
            return self._error(req, HTTPStatus.CONFLICT, str(exc), "runs")
        return self._redirect(req, f"/run?{urlencode({'id': handle.id, 'notice': 'retried'})}")
