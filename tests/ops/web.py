"""The dashboard over HTTP for the tests: one request and its response
(:class:`Resp`, also what ``test_mount.call`` answers for the mounted WSGI app),
and a sign-in (the session cookie). The in-process server comes from the
``dashboard`` fixture (``tests/ops/conftest.py``), which returns its base URL."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from tests.ops.conftest import TOKEN

#: The ``dashboard`` fixture: start a dashboard (``DashboardConfig`` keywords), get its base URL.
Start = Callable[..., str]


@dataclass
class Resp:
    """A response: its status, headers (lower-case names), body, and each
    ``Set-Cookie`` header (filled by ``test_mount.call``, which sees them apart)."""

    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Resp {self.status} {self.headers} {self.body[:300]!r}>"


def request(
    base: str,
    path: str,
    method: str = "GET",
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
) -> Resp:
    """One request to the dashboard at ``base``, from the address ``source`` when
    given (any of 127.0.0.0/8 on Linux), as a form post when ``form`` is given."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(
        u.hostname or "127.0.0.1",
        u.port,
        timeout=10,
        source_address=(source, 0) if source is not None else None,
    )
    data = urlencode(form).encode() if form is not None else None
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    finally:
        conn.close()


def sign_in(base: str) -> tuple[str, str]:
    """The session cookie (``name=value``) and the whole Set-Cookie header."""
    r = request(base, "/login", "POST", {"token": TOKEN})
    assert r.status == 303, r
    header = r.headers["set-cookie"]
    return header.split(";")[0], header
