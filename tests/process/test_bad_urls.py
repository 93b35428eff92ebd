"""Mistyped Redis URLs: the supervisor refuses them at start with one clear line
naming the problem (never a traceback), and never prints the password."""

from __future__ import annotations

import socket

import pytest

from tests.process.conftest import run_supervisor_once

pytestmark = pytest.mark.process

PASSWORD = "pw-Never-Printed-42"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("query", "named"),
    [("?sokcet_timeout=3", "sokcet_timeout"), ("?ssl_cert_reqs=none", "ssl_cert_reqs")],
)
def test_an_unknown_url_option_is_refused_clearly(query: str, named: str) -> None:
    """A misspelt query option (or a TLS option on redis://) used to end the
    supervisor in a redis-py traceback, ``TypeError: AbstractConnection.__init__()
    got an unexpected keyword argument``, raised at its first command."""
    url = f"redis://app:{PASSWORD}@127.0.0.1:{_closed_port()}/0{query}"
    proc = run_supervisor_once(
        "--app", "x", "--procs", "1", "--module", "tests.faults.workload", "--url", url
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert named in out and "option" in out, out
    assert PASSWORD not in out, out


@pytest.mark.parametrize("path", ["/notadb", "/1O"])
def test_a_database_that_is_no_number_is_refused_clearly(path: str) -> None:
    """redis-py ignores a URL path that is not a number and uses database 0: a
    mistyped ``/1O`` ran the supervisor on db 0, maybe another environment's."""
    url = f"redis://app:{PASSWORD}@127.0.0.1:{_closed_port()}{path}"
    proc = run_supervisor_once(
        "--app", "x", "--procs", "1", "--module", "tests.faults.workload", "--url", url
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert "database" in out and repr(path[1:]) in out, out
    assert "cannot reach" not in out, out  # refused before any connection attempt
    assert PASSWORD not in out, out
