"""The dashboard over HTTP (no browser): pages, escaping, paging, the token rules."""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import pytest
import redis

from redflow_mp import Client
from redflow_supervisor.ops.dashboard import DashboardConfig, is_loopback
from tests.helpers import status_of, text, wait_until
from tests.ops.conftest import TOKEN, Result, Runs
from tests.ops.web import Resp, Start, request


def ids_in(body: str) -> list[str]:
    return re.findall(r"<a href='/run\?id=([0-9A-Z]+)'>", body)


def test_pages(dashboard: Start, runs: Runs) -> None:
    base = dashboard(token=TOKEN)
    r = request(base, "/")
    assert (r.status, r.headers["location"]) == (303, "/runs")
    r = request(base, "/runs")
    assert r.status == 200, r
    assert ids_in(r.body) == [runs.queued, runs.failed, runs.succeeded]
    for status in ("queued", "failed", "succeeded"):
        assert f'<span class="badge s-{status}">{status}</span>' in r.body
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
    assert f"<script nonce='{nonce}'>" in r.body and "location.reload()" in r.body
    assert "<meta http-equiv='refresh' content='5'>" in r.body  # noscript fallback
    assert r.headers["x-frame-options"] == "DENY"

    assert ids_in(request(base, "/runs?workflow=ops-fail").body) == [runs.failed]
    assert ids_in(request(base, "/runs?status=queued").body) == [runs.queued]
    assert ids_in(request(base, "/runs?workflow=ops-fail&status=queued").body) == []
    r = request(base, "/runs?status=bogus")
    assert r.status == 400 and "unknown status bogus" in r.body

    r = request(base, f"/run?id={runs.failed}")
    assert r.status == 200, r
    assert "<strong>ValueError</strong>: cannot parse &#x27;x&#x27;" in r.body
    assert "Traceback (most recent call last)" in r.body and "in _explode" in r.body
    assert re.findall(r"<tr class='step'><td class='num'>\d</td><td>(\w+)</td>", r.body) == [
        "ok",
        "parse",
    ]
    assert r.body.count("<div class='bar'>") == 2
    # every attempt with its outcome and error (here one)
    attempts = r.body.split("<h2>Attempts</h2>")[1].split("</table>")[0]
    assert attempts.count("<tr class='attempt'>") == 1
    assert '<span class="badge s-failed">failed</span>' in attempts
    assert "<strong>ValueError</strong>: cannot parse &#x27;x&#x27;" in attempts
    assert "action='/actions/retry'" in r.body and "action='/actions/cancel'" not in r.body
    r = request(base, f"/run?id={runs.queued}")
    assert "action='/actions/cancel'" in r.body and "action='/actions/retry'" not in r.body
    r = request(base, f"/run?id={runs.succeeded}")
    assert "<h2>Output</h2><pre>{\n  &quot;answer&quot;: 42\n}</pre>" in r.body
    assert "<form" not in r.body.split("<main>")[1]  # finished for good: no actions

    r = request(base, "/workflows")
    assert r.status == 200 and "<code>0 3 * * *</code> Europe/Berlin · next" in r.body
    assert "<a href='/runs?workflow=ops-parked'>ops-parked</a>" in r.body
    assert "<th>rate</th>" in r.body
    parked_row = r.body.split("ops-parked</a>")[1].split("</tr>")[0]
    assert "<td>5/m</td>" in parked_row
    r = request(base, "/queues")
    assert re.search(r"<td>ops-idle</td><td class='num'>1</td><td class='num'>0</td>", r.body)
    r = request(base, "/supervisors")
    assert r.status == 200 and "No live supervisors" in r.body
    assert request(base, "/nope").status == 404
    assert request(base, "/run?id=01NOPE").status == 404
    # a name past the limit was a 500 page with a traceback in the log, a huge page
    # number a "Redis error" (an offset past int64)
    assert request(base, "/runs?" + urlencode({"workflow": "w" * 600})).status == 400
    assert request(base, "/runs?page=99999999999999999999").status == 200
    assert request(base, "/run").status == 400
    # an id naming one of a run's other keys is no run id (it showed a bogus run,
    # or a 500 page for :attempts)
    for suffix in (":steps", ":attempts"):
        r = request(base, f"/run?{urlencode({'id': runs.failed + suffix})}")
        assert r.status == 404 and "not found" in r.body, suffix
    assert request(base, "/healthz").body == "ok\n"


def test_paging(dashboard: Start, runs: Runs) -> None:
    base = dashboard(page_size=2)
    first = request(base, "/runs")
    assert ids_in(first.body) == [runs.queued, runs.failed]
    older = f"<a href='/runs?page=2&amp;after={runs.failed}'>older →</a>"
    assert older in first.body and "← newer" not in first.body
    second = request(base, f"/runs?page=2&after={runs.failed}")
    assert ids_in(second.body) == [runs.succeeded]
    # Without the cursor (a bookmarked page), the page number places it.
    assert ids_in(request(base, "/runs?page=2").body) == [runs.succeeded]
    assert "<a href='/runs?page=1'>← newer</a>" in second.body and "older →" not in second.body
    filtered = request(base, "/runs?workflow=ops-parked&status=queued&page=1")
    assert "value='ops-parked'" in filtered.body and "<option value='queued' selected>" in (
        filtered.body
    )


def test_hostile_names_and_ids_are_escaped(
    dashboard: Start, synced: Client, raw: redis.Redis
) -> None:
    evil = '<script>alert("x")</script>{{7*7}} \' " & \u202e ü'
    handle = synced.run_by_name(evil, {"k": "</pre><script>alert(1)</script>"}, queue_override="q")
    evil_id = "<img src=x onerror=alert(1)>'\"{}"
    now = synced.server_time_ms()
    raw.hset(
        synced.keys.run(evil_id),
        mapping={
            "id": evil_id,
            "workflow": evil,
            "queue": evil,
            "status": "failed",
            "createdAt": now,
            "errorJson": '{"type":"<b>T</b>","message":"<i>m</i>",'
            '"traceback":"</pre><script>alert(2)</script>"}',
        },
    )
    raw.zadd(synced.keys.runs_created, {evil_id: now})
    base = dashboard(token=TOKEN)
    pages = [
        "/runs",
        f"/run?{urlencode({'id': handle.id})}",
        f"/run?{urlencode({'id': evil_id})}",
        f"/runs?{urlencode({'workflow': evil})}",
        f"/run?{urlencode({'id': '<script>alert(3)</script>'})}",
        "/workflows",
        "/queues",
    ]
    for page in pages:
        body = request(base, page).body
        assert "<script>alert" not in body and "<img" not in body and "<b>T" not in body, page
    body = request(base, f"/run?{urlencode({'id': evil_id})}").body
    assert "&lt;img src=x onerror=alert(1)&gt;&#x27;&quot;{}" in body
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in body
    assert "name='id' value='&lt;img src=x onerror=alert(1)&gt;&#x27;&quot;{}'" in body
    listing = request(base, "/runs").body
    assert f"href='/run?{urlencode({'id': evil_id}).replace('&', '&amp;')}'" in listing
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;{{7*7}} &#x27; &quot; &amp;" in listing


def test_actions_need_the_token_and_post(
    dashboard: Start, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    base = dashboard(token=TOKEN)
    assert request(base, f"/actions/cancel?id={runs.queued}&token={TOKEN}").status == 405
    for form in ({"id": runs.queued}, {"id": runs.queued, "token": "wrong-token-123"}):
        r = request(base, "/actions/cancel", "POST", form)
        assert r.status == 403 and "wrong or missing token" in r.body, r
    r = request(
        base,
        "/actions/cancel",
        "POST",
        {"id": runs.queued, "token": TOKEN},
        {"Origin": "http://evil.example"},
    )
    assert r.status == 403 and "cross-site" in r.body
    r = request(
        base,
        "/actions/cancel",
        "POST",
        {"id": runs.queued},
        {"Sec-Fetch-Site": "cross-site", "X-Redflow-Token": TOKEN},
    )
    assert r.status == 403
    assert status_of(raw, client, runs.queued) == "queued"

    r = request(
        base,
        "/actions/cancel",
        "POST",
        {"id": runs.queued, "token": TOKEN, "reason": "from a test"},
    )
    assert r.status == 303, r
    assert r.headers["location"] == f"/run?id={runs.queued}&notice=canceled"
    assert status_of(raw, client, runs.queued) == "canceled"
    assert text(raw.hget(client.keys.run(runs.queued), "cancelReason")) == "from a test"
    page = request(base, r.headers["location"]).body
    assert "Run canceled." in page and "action='/actions/retry'" in page

    r = request(base, "/actions/retry", "POST", {"id": runs.failed}, {"X-Redflow-Token": TOKEN})
    assert r.status == 303, r
    new_id = re.match(r"/run\?id=(\w+)&notice=retried$", r.headers["location"]).group(1)  # type: ignore[union-attr]
    assert text(raw.hget(client.keys.run(new_id), "retryOf")) == runs.failed
    page = request(base, f"/run?id={new_id}").body
    assert f"<a class='mono' href='/run?id={runs.failed}'>{runs.failed}</a>" in page
    r = request(base, "/actions/retry", "POST", {"id": runs.succeeded, "token": TOKEN})
    assert r.status == 409 and "only failed or canceled" in r.body
    r = request(base, "/actions/cancel", "POST", {"id": "nope", "token": TOKEN})
    assert r.status == 404

    # Resume: beside Retry, the same token rule; the same run goes back to its queue
    page = request(base, f"/run?id={runs.failed}").body
    assert "action='/actions/resume'" in page
    r = request(base, "/actions/resume", "POST", {"id": runs.failed})
    assert r.status == 403 and status_of(raw, client, runs.failed) == "failed"
    r = request(base, "/actions/resume", "POST", {"id": runs.failed, "token": TOKEN})
    assert r.status == 303, r
    assert r.headers["location"] == f"/run?id={runs.failed}&notice=resumed"
    assert text(raw.hget(client.keys.run(runs.failed), "attempt")) == "2"
    assert "Resumed: queued again as the same run" in request(base, r.headers["location"]).body
    r = request(base, "/actions/resume", "POST", {"id": runs.succeeded, "token": TOKEN})
    assert r.status == 409 and "only a failed or canceled run can be resumed" in r.body


def test_without_a_token_there_are_no_actions(
    dashboard: Start, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    base = dashboard()
    page = request(base, f"/run?id={runs.queued}").body
    assert "Actions are disabled" in page and "<form method='post'" not in page
    r = request(base, "/actions/cancel", "POST", {"id": runs.queued, "token": "anything-at-all"})
    assert r.status == 403 and "actions are disabled" in r.body
    assert status_of(raw, client, runs.queued) == "queued"


def test_loopback_bind_checks_the_host_header(dashboard: Start, runs: Runs) -> None:
    base = dashboard()
    port = urlsplit(base).port
    assert request(base, "/runs", headers={"Host": f"localhost:{port}"}).status == 200
    assert request(base, "/runs", headers={"Host": f"[::1]:{port}"}).status == 200
    assert request(base, "/runs", headers={"Host": f"evil.example:{port}"}).status == 421
    r = request(base, "/actions/cancel", "POST", {"id": runs.queued}, {"Host": "rebound.example"})
    assert r.status == 421


def test_non_loopback_bind_needs_the_token_for_everything(dashboard: Start, runs: Runs) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        DashboardConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        DashboardConfig(token="short")
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")

    base = dashboard(host="0.0.0.0", token=TOKEN)
    r = request(base, "/runs")
    assert r.status == 401 and "name='token'" in r.body and ids_in(r.body) == []
    assert request(base, "/run?id=" + runs.failed).status == 401
    assert request(base, "/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert request(base, "/runs", headers={"Authorization": "Bearer nope-nope-nope"}).status == 401
    assert request(base, "/login", "POST", {"token": "wrong-token-123"}).status == 403
    r = request(base, "/login", "POST", {"token": TOKEN})
    assert r.status == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    r = request(base, "/runs", headers={"Cookie": cookie.split(";")[0]})
    assert r.status == 200 and ids_in(r.body) == [runs.queued, runs.failed, runs.succeeded]
    assert request(base, "/runs", headers={"Cookie": "rf_dashboard=forged"}).status == 401
    # the cookie alone never authorises an action
    r = request(
        base, "/actions/cancel", "POST", {"id": runs.queued}, {"Cookie": cookie.split(";")[0]}
    )
    assert r.status == 403


def test_cli_refuses_an_open_bind_without_token(redflow: Callable[..., Result]) -> None:
    res = redflow("dashboard", "--host", "0.0.0.0", "--port", "0")
    assert res.code == 2 and "needs a token" in res.err and "RF_DASHBOARD_TOKEN" in res.err
    res = redflow("dashboard", "--port", "0", "--token", "short")
    assert res.code == 2 and "at least 16 characters" in res.err


def test_run_page_of_an_input_nested_too_deeply(
    dashboard: Start, synced: Client, raw: redis.Redis
) -> None:
    """Issue 10 #12: the run page answers 200 and shows the input as unreadable."""
    handle = synced.run_by_name("ops-parked", {"n": 1})
    raw.hset(synced.keys.run(handle.id), "inputJson", "[" * 1000 + "]" * 1000)
    base = dashboard()
    r = request(base, f"/run?id={handle.id}")
    assert r.status == 200, r
    assert "unreadable" in r.body and "nested too deeply" in r.body
    assert handle.id in ids_in(request(base, "/runs").body)


def test_standalone_server_keeps_http11_connections_alive(dashboard: Start, runs: Runs) -> None:
    base = urlsplit(dashboard(token=TOKEN))
    conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port, timeout=10)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        conn.request("GET", "/runs")
        r = conn.getresponse()
        assert (r.version, r.status, r.getheader("Connection")) == (11, 200, None)
        assert runs.failed in r.read().decode()
        sock = conn.sock
        # a refused action leaves its body read: the next request on the connection is whole
        conn.request("POST", "/actions/cancel", body=urlencode({"id": runs.queued}), headers=form)
        r = conn.getresponse()
        assert r.status == 403 and b"wrong or missing token" in r.read()
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"ok\n") and conn.sock is sock
        # a body over the limit: refused unread, and the connection closes after the answer
        conn.request("POST", "/login", body=b"token=" + b"x" * 70_000, headers=form)
        r = conn.getresponse()
        assert (r.status, r.getheader("Connection")) == (413, "close")
        assert b"request body too large" in r.read()
    finally:
        conn.close()
    # HTTP/1.0 clients get one request per connection
    raw = socket.create_connection((base.hostname or "127.0.0.1", base.port or 0), timeout=10)
    with raw:
        raw.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nok\n")
    assert b"Connection: close" in data


def test_queues_page_reads_one_page_of_queues(
    dashboard: Start, client: Client, raw: redis.Redis
) -> None:
    """The Queues page read the depths of every known queue (3 commands each) on
    every load, and reloads itself every few seconds: with 100,000 queue names
    (one queue_override per tenant) an open tab kept Redis busy for good. It shows
    one page of queues (by name), with a pager."""
    from tests.helpers import command_counts

    names = [f"tenant-{i:05d}" for i in range(20_000)]
    for i in range(0, len(names), 5_000):
        raw.sadd(client.keys.queues, *names[i : i + 5_000])
    base = dashboard(page_size=25)
    got: list[Resp] = []
    counts = command_counts(raw, lambda: got.append(request(base, "/queues")))
    body = got[0].body
    assert got[0].status == 200
    assert "tenant-00000" in body and "tenant-00024" in body and "tenant-00025" not in body
    assert "20,000 queues" in body and "<a href='/queues?page=2'>" in body
    assert counts.get("zcard", 0) <= 2 * 25, counts
    second = request(base, "/queues?page=2").body
    assert "tenant-00025" in second and "tenant-00024" not in second


def test_idle_connections_cannot_grow_the_threads_without_bound(dashboard: Start) -> None:
    """A thread per connection, each idle one kept 30 s (slowloris needs no token:
    the request is parsed before any check): 500 idle sockets were 500 threads.
    A connection past MAX_CONNECTIONS closes the one waiting longest for its
    request (test_dashboard_slow_clients.py), and the threads stay bounded."""
    import threading
    import time

    from redflow_supervisor.ops.dashboard import MAX_CONNECTIONS

    base = dashboard()
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None and port is not None
    before = threading.active_count()
    socks = [socket.create_connection((host, port)) for _ in range(MAX_CONNECTIONS + 100)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS + 2
    finally:
        for s in socks:
            s.close()
    # Served again once they are gone: each handler thread ends when it reads its
    # connection's end (a fixed 0.2 s raced them: on a loaded machine a request
    # accepted while the 100 are still counted is closed at once, as above).
    wait_until(lambda: threading.active_count() <= before, 30, message="the handler threads to end")
    assert request(base, "/healthz").body == "ok\n"
