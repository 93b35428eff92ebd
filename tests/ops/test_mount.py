"""The dashboard as a WSGI application mounted under a path prefix, without a browser.

Requests go straight into ``make_app(...)`` wrapped in ``wsgiref.validate`` (so
every call is also checked against PEP 3333), with ``SCRIPT_NAME`` set as a host
application's dispatcher sets it; one test goes through a real Flask host.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
import redis

from redflow_mp import Client
from redflow_supervisor.ops.dashboard import DashboardConfig, is_loopback, make_app
from tests.helpers import status_of, text
from tests.ops.conftest import TOKEN, Runs
from tests.ops.hosts import HOST_HOME, MOUNT, PASSWORD, USER, flask_host
from tests.ops.web import Resp

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication


def call(
    app: WSGIApplication,
    target: str,
    method: str = "GET",
    *,
    mount: str = MOUNT,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    scheme: str = "http",
) -> Resp:
    """One request to ``app`` mounted at ``mount`` (``target`` is below the mount)."""
    path, _, query = target.partition("?")
    body = urlencode(form).encode() if form is not None else b""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": mount,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
    }
    if form is not None:
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, hdrs
        return lambda data: None

    result = validator(app)(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    hdrs: list[tuple[str, str]] = got["headers"]
    return Resp(
        int(got["status"].split()[0]),
        {k.lower(): v for k, v in hdrs},
        data.decode(),
        [v for k, v in hdrs if k.lower() == "set-cookie"],
    )


def urls_in(body: str) -> list[str]:
    """Every link and form action of a page, unescaped."""
    return [html.unescape(u) for u in re.findall(r"""(?:href|action)=['"]([^'"]*)['"]""", body)]


def test_links_forms_and_redirects_stay_under_the_mount(synced: Client, runs: Runs) -> None:
    app = make_app(synced, token=TOKEN, page_size=1)
    for root in ("", "/"):
        r = call(app, root)
        assert (r.status, r.headers["location"]) == (303, f"{MOUNT}/runs"), r
    pages = [
        "/runs",
        "/runs?page=2",
        f"/run?id={runs.failed}",
        f"/run?id={runs.queued}",
        f"/run?id={runs.succeeded}",
        "/workflows",
        "/queues",
        "/supervisors",
        "/nope",
    ]
    seen: set[str] = set()
    for target in pages:
        r = call(app, target)
        assert r.status in (200, 404), (target, r)
        urls = urls_in(r.body)
        assert urls, target
        outside = [u for u in urls if not u.startswith(f"{MOUNT}/")]
        assert outside == [], (target, outside)
        seen.update(u.split("?")[0] for u in urls)
    assert {
        f"{MOUNT}/runs",
        f"{MOUNT}/run",
        f"{MOUNT}/workflows",
        f"{MOUNT}/queues",
        f"{MOUNT}/supervisors",
        f"{MOUNT}/actions/cancel",
        f"{MOUNT}/actions/retry",
    } <= seen
    listing = call(app, "/runs").body
    assert (
        f"href='{MOUNT}/runs?page=2&amp;after=" in listing and f"href='{MOUNT}/run?id=" in listing
    )
    r = call(app, "/runs", "HEAD")
    assert r.status == 200 and r.body == "" and int(r.headers["content-length"]) > 1000


def test_actions_under_the_mount_need_the_token(
    synced: Client, runs: Runs, raw: redis.Redis
) -> None:
    app = make_app(synced, token=TOKEN)
    r = call(app, f"/actions/cancel?id={runs.queued}&token={TOKEN}")
    assert r.status == 405 and r.headers["allow"] == "POST"
    for form in ({"id": runs.queued}, {"id": runs.queued, "token": "wrong-token-123"}):
        r = call(app, "/actions/cancel", "POST", form=form)
        assert r.status == 403 and "wrong or missing token" in r.body, r
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},  # same host, another port: another origin
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for hdrs in refused:
        r = call(
            app, "/actions/cancel", "POST", form={"id": runs.queued, "token": TOKEN}, headers=hdrs
        )
        assert r.status == 403 and "cross-site" in r.body, (hdrs, r)
    assert status_of(raw, synced, runs.queued) == "queued"

    r = call(
        app,
        "/actions/cancel",
        "POST",
        form={"id": runs.queued, "token": TOKEN, "reason": "mounted"},
        headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status == 303, r
    assert r.headers["location"] == f"{MOUNT}/run?id={runs.queued}&notice=canceled"
    assert status_of(raw, synced, runs.queued) == "canceled"
    assert text(raw.hget(synced.keys.run(runs.queued), "cancelReason")) == "mounted"

    r = call(
        app, "/actions/retry", "POST", form={"id": runs.failed}, headers={"X-Redflow-Token": TOKEN}
    )
    assert r.status == 303, r
    m = re.fullmatch(rf"{MOUNT}/run\?id=(\w+)&notice=retried", r.headers["location"])
    assert m is not None, r
    assert text(raw.hget(synced.keys.run(m.group(1)), "retryOf")) == runs.failed


def test_sign_in_cookie_is_scoped_to_the_mount(synced: Client, runs: Runs) -> None:
    app = make_app(synced, token=TOKEN, sign_in=True)
    r = call(app, "/runs")
    assert r.status == 401 and f"action='{MOUNT}/login'" in r.body and runs.failed not in r.body
    assert call(app, "/login", "POST", form={"token": "wrong-token-123"}).status == 403
    r = call(app, "/login", "POST", form={"token": TOKEN})
    assert (r.status, r.headers["location"]) == (303, f"{MOUNT}/runs"), r
    [cookie] = r.cookies
    attrs = [a.strip() for a in cookie.split(";")]
    assert attrs[0].startswith("rf_dashboard=") and TOKEN not in cookie
    assert {"HttpOnly", "SameSite=Strict", f"Path={MOUNT}"} <= set(attrs)
    assert "Secure" not in attrs
    [secure] = call(app, "/login", "POST", form={"token": TOKEN}, scheme="https").cookies
    assert "Secure" in [a.strip() for a in secure.split(";")]
    # the host's own cookies around ours, one of them unparsable by http.cookies
    jar = f'host_session="a b"; theme={{"x":1}}; {attrs[0]}; csrftoken=abc'
    r = call(app, "/runs", headers={"Cookie": jar})
    assert r.status == 200 and runs.failed in r.body
    assert call(app, "/runs", headers={"Cookie": "rf_dashboard=forged"}).status == 401
    assert call(app, "/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    # the cookie alone never authorises an action
    r = call(app, "/actions/cancel", "POST", form={"id": runs.queued}, headers={"Cookie": jar})
    assert r.status == 403
    r = call(app, "/logout", "POST", form={}, headers={"Cookie": jar})
    assert (r.status, r.headers["location"]) == (303, f"{MOUNT}/login")
    assert r.cookies[0].startswith("rf_dashboard=;") and f"Path={MOUNT}" in r.cookies[0]
    # at the root of a host, the cookie's path is the root
    [root] = call(app, "/login", "POST", mount="", form={"token": TOKEN}).cookies
    assert "Path=/" in [a.strip() for a in root.split(";")]


def test_host_check_is_the_hosts_business_when_mounted(synced: Client, runs: Runs) -> None:
    evil = {"Host": "rebound.example:8000"}
    assert call(make_app(synced, token=TOKEN), "/runs", headers=evil).status == 200
    checked = make_app(synced, token=TOKEN, host_check=is_loopback)
    assert call(checked, "/runs", headers=evil).status == 421
    r = call(checked, "/actions/cancel", "POST", form={"id": runs.queued}, headers=evil)
    assert r.status == 421
    assert call(checked, "/runs", headers={"Host": "localhost:8000"}).status == 200
    assert call(checked, "/runs", headers={"Host": "[::1]:8000"}).status == 200
    named = make_app(synced, token=TOKEN, host_check=lambda h: h == "ops.example.com")
    assert call(named, "/runs", headers={"Host": "ops.example.com"}).status == 200
    assert call(named, "/runs", headers={"Host": "ops.example.com:443"}).status == 200
    assert call(named, "/runs", headers={"Host": "example.com"}).status == 421
    # the stand-alone server: Host checked on a loopback bind, sign-in on any other
    local = DashboardConfig().app_settings()
    assert local.host_check is is_loopback and not local.sign_in
    wide = DashboardConfig(host="0.0.0.0", token=TOKEN).app_settings()
    assert wide.host_check is None and wide.sign_in


def test_read_only_mount_has_no_actions(synced: Client, runs: Runs, raw: redis.Redis) -> None:
    for app in (make_app(synced, read_only=True), make_app(synced, TOKEN, read_only=True)):
        page = call(app, f"/run?id={runs.queued}").body
        assert "Actions are disabled: this dashboard is mounted read-only." in page
        assert "<form method='post'" not in page and "actions disabled" in page
        r = call(app, "/actions/cancel", "POST", form={"id": runs.queued, "token": TOKEN})
        assert r.status == 403 and "actions are disabled" in r.body, r
    assert status_of(raw, synced, runs.queued) == "queued"


def test_make_app_rejects_bad_arguments(client: Client) -> None:
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (lambda: make_app(client), ValueError, "read_only=True"),
        (lambda: make_app(client, token="short"), ValueError, "at least 16"),
        (lambda: make_app(client, read_only=True, sign_in=True), ValueError, "needs a token"),
        (lambda: make_app(client, TOKEN, page_size=0), ValueError, "between 1 and 500, not 0"),
        (lambda: make_app(client, TOKEN, refresh=-1), ValueError, ">= 0 seconds, not -1"),
        (lambda: make_app(client, 12345678), TypeError, "not int"),  # type: ignore[arg-type]
        (lambda: make_app(client, TOKEN, host_check="localhost"), TypeError, "'localhost'"),  # type: ignore[arg-type]
    ]
    for build, exc, words in cases:
        with pytest.raises(exc, match=re.escape(words)):
            build()


def test_hostile_mount_path_is_quoted_and_escaped(synced: Client, runs: Runs) -> None:
    mount = "/x'y<b>\"z"
    app = make_app(synced, token=TOKEN)
    r = call(app, "/runs", mount=mount)
    assert r.status == 200 and "<b>" not in r.body and '"z' not in r.body
    quoted = "/x'y%3Cb%3E%22z"
    assert all(u.startswith(f"{quoted}/") for u in urls_in(r.body)), urls_in(r.body)
    assert call(app, "/", mount=mount).headers["location"] == f"{quoted}/runs"
    csp = r.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
    assert f"<script nonce='{nonce}'>" in r.body and "frame-ancestors 'none'" in csp
    assert (
        r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    )


def test_flask_host_with_its_own_auth_in_front(synced: Client, runs: Runs) -> None:
    from werkzeug.test import Client as TestClient

    host = TestClient(flask_host(make_app(synced, token=TOKEN)))
    assert host.get("/").get_data(as_text=True) == HOST_HOME
    assert host.get(f"{MOUNT}/runs").status_code == 401  # the host's auth, not ours
    auth = (USER, PASSWORD)
    r = host.get(f"{MOUNT}/", auth=auth)
    assert (r.status_code, r.headers["Location"]) == (303, f"{MOUNT}/runs")
    r = host.get(f"{MOUNT}/runs", auth=auth)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and runs.failed in body
    assert all(u.startswith(f"{MOUNT}/") for u in urls_in(body))
