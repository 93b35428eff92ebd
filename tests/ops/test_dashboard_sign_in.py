"""The stand-alone dashboard's sign-in over real HTTP: failed tokens are rate limited
(per client address and in all), short tokens are refused, sessions expire and
logout revokes them (security review, dash-auth6)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from redflow_supervisor.ops.dashboard import DashboardConfig
from redflow_supervisor.ops.session import LoginLimits, SignIns, Throttle, client_key
from tests.ops.conftest import TOKEN, Result, Runs
from tests.ops.web import Start, request, sign_in


def test_failed_sign_ins_are_limited_per_client_address(dashboard: Start) -> None:
    """Default limits: 5 failures free, then the address waits (1 s, doubling)."""
    base = dashboard(host="0.0.0.0", token=TOKEN)
    for _ in range(5):
        assert request(base, "/login", "POST", {"token": "wrong-token-12345"}).status == 403
    r = request(base, "/login", "POST", {"token": TOKEN})
    assert r.status == 429, f"a 6th sign-in right after 5 failures was not limited: {r}"
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 2 and "set-cookie" not in r.headers
    assert "too many failed sign-ins" in r.body
    # a guessed Bearer token is limited too (no other door for the guesser)
    r = request(base, "/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 429 and "retry-after" in r.headers
    # another address is not locked out by this one
    other = request(base, "/login", "POST", {"token": "wrong-token-12345"}, source="127.0.0.2")
    assert other.status == 403, other
    time.sleep(wait + 0.1)
    r = request(base, "/login", "POST", {"token": TOKEN})
    assert r.status == 303, r
    # success forgets the failures: the next wrong one is an ordinary 403
    assert request(base, "/login", "POST", {"token": "wrong-token-12345"}).status == 403


def test_failed_sign_ins_are_limited_in_all(dashboard: Start) -> None:
    """Default limits: 50 failures in all pass, whatever their addresses; then
    every address waits, while a signed-in session still reads."""
    base = dashboard(host="0.0.0.0", token=TOKEN)
    cookie, _ = sign_in(base)
    for i in range(50):  # 4 from each of 13 addresses: none is limited on its own
        source = f"127.0.0.{i // 4 + 2}"
        r = request(base, "/login", "POST", {"token": "wrong-token-12345"}, source=source)
        assert r.status == 403, (i, r)
    r = request(base, "/login", "POST", {"token": TOKEN}, source="127.0.0.99")
    assert r.status == 429, f"a sign-in after 50 failures in all was not limited: {r}"
    assert int(r.headers["retry-after"]) >= 1
    # a signed-in operator is not locked out: the session cookie still reads
    assert request(base, "/runs", headers={"Cookie": cookie}).status == 200


def test_short_tokens_are_refused(redflow: Callable[..., Result]) -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        DashboardConfig(token="12345678")
    DashboardConfig(token="x" * 16)
    res = redflow("dashboard", "--port", "0", "--token", "123456789012345")
    assert res.code == 2, f"a 15-character token was accepted: {res}"
    assert "at least 16 characters" in res.err and "RF_DASHBOARD_TOKEN" in res.err
    assert "123456789012345" not in res.err


def test_logout_revokes_a_copied_cookie(dashboard: Start) -> None:
    base = dashboard(host="0.0.0.0", token=TOKEN)
    cookie, header = sign_in(base)
    attrs = [a.strip() for a in header.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs), header
    copied = {"Cookie": cookie}
    r = request(base, "/runs", headers=copied)
    assert r.status == 200 and "action='/logout'" in r.body, r  # the Sign out button
    assert "action='/logout'" not in request(base, "/login").body
    r = request(base, "/logout", "POST", {}, headers=copied)
    assert r.status == 303
    r = request(base, "/runs", headers=copied)
    assert r.status == 401, f"a copied cookie still read the dashboard after logout: {r}"
    # other sessions live on
    second, _ = sign_in(base)
    assert request(base, "/runs", headers={"Cookie": second}).status == 200
    # the browser drops it too, at the default absolute limit (12 h)
    assert "Max-Age=43200" in attrs, header


def test_a_restart_ends_every_session(dashboard: Start) -> None:
    first = dashboard(host="0.0.0.0", token=TOKEN)
    cookie, _ = sign_in(first)
    again = dashboard(host="0.0.0.0", token=TOKEN)  # another process, same token
    r = request(again, "/runs", headers={"Cookie": cookie})
    assert r.status == 401, f"a session of another dashboard process was accepted: {r}"


def test_sessions_expire_idle_and_absolute(dashboard: Start) -> None:
    base = dashboard(host="0.0.0.0", token=TOKEN, session_idle=1.0, session_max=2.5)
    idle, _ = sign_in(base)
    time.sleep(1.3)
    r = request(base, "/runs", headers={"Cookie": idle})
    assert r.status == 401, f"a session idle past its limit still read: {r}"
    busy, header = sign_in(base)
    assert "Max-Age=2;" in header + ";" or "Max-Age=3;" in header + ";", header
    started = time.monotonic()
    while time.monotonic() - started < 2.0:  # used every 0.4 s: never idle
        assert request(base, "/runs", headers={"Cookie": busy}).status == 200
        time.sleep(0.4)
    time.sleep(max(0.0, 2.7 - (time.monotonic() - started)))
    r = request(base, "/runs", headers={"Cookie": busy})
    assert r.status == 401, f"a session past its absolute limit still read: {r}"


def test_guessed_action_tokens_are_limited(dashboard: Start, runs: Runs) -> None:
    """On the default loopback bind (no sign-in) an action's token is the door:
    failed ones count as failed sign-ins do."""
    base = dashboard(token=TOKEN)
    for _ in range(5):
        r = request(
            base, "/actions/cancel", "POST", {"id": runs.queued, "token": "guess-12345678901"}
        )
        assert r.status == 403, r
    r = request(base, "/actions/cancel", "POST", {"id": runs.queued, "token": TOKEN})
    assert r.status == 429, f"an action right after 5 wrong tokens was not limited: {r}"
    assert "retry-after" in r.headers
    # reads need no token here, and are not limited
    assert request(base, "/runs").status == 200


def test_failure_counts_are_bounded_and_keyed_by_address() -> None:
    assert client_key({"REMOTE_ADDR": "2001:db8:1:2:3:4:5:6"}) == "2001:db8:1:2::/64"
    assert client_key({"REMOTE_ADDR": "2001:db8:1:2:ffff::1"}) == "2001:db8:1:2::/64"
    assert client_key({"REMOTE_ADDR": "::ffff:10.0.0.7"}) == "10.0.0.7"
    assert client_key({"REMOTE_ADDR": "10.0.0.7"}) == "10.0.0.7"
    assert client_key({}) == ""
    throttle = Throttle(LoginLimits(max_clients=100, global_free=10**9))
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(throttle._clients) <= 100
    sessions = SignIns(idle=10.0, most=100.0)
    ids = [sessions.start(0.0) for _ in range(1200)]
    assert len(sessions._live) <= 1000 and sessions.use(ids[-1], 1.0)
    assert not sessions.use(ids[-1], 12.0)  # idle past 10 s


def test_cookie_is_secure_behind_a_tls_proxy(dashboard: Start) -> None:
    """The stand-alone server speaks plain HTTP: behind a TLS-terminating proxy the
    cookie is Secure when the proxy says ``X-Forwarded-Proto: https``."""
    base = dashboard(host="0.0.0.0", token=TOKEN)
    _, plain = sign_in(base)
    assert "Secure" not in [a.strip() for a in plain.split(";")]
    r = request(base, "/login", "POST", {"token": TOKEN}, {"X-Forwarded-Proto": "https"})
    attrs = [a.strip() for a in r.headers["set-cookie"].split(";")]
    assert "Secure" in attrs, f"no Secure behind a TLS proxy: {r.headers['set-cookie']}"
