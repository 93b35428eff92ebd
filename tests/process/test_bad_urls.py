"""Mistyped Redis URLs: the supervisor refuses them at start with one clear line
naming the problem (never a traceback), and never prints the password."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.process.conftest import ROOT, clean_env, run_supervisor_once
from tests.redis_server import RedisServer

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
    assert proc.returncode == 2, out  # a bad setting: systemd does not restart it
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
    assert proc.returncode == 2, out  # a bad setting: systemd does not restart it
    assert "Traceback" not in out, out
    assert "database" in out and repr(path[1:]) in out, out
    assert "cannot reach" not in out, out  # refused before any connection attempt
    assert PASSWORD not in out, out


@pytest.mark.parametrize(("port", "said"), [("99999", "out of range"), ("6x79", "'6x79'")])
def test_a_bad_port_names_the_url(port: str, said: str) -> None:
    """A port out of range (or no number) in the URL, from the environment as an
    operator sets it: the supervisor printed redis-py's bare "Port out of range
    0-65535", naming neither the URL nor the setting."""
    url = f"redis://app:{PASSWORD}@127.0.0.1:{port}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "redflow_supervisor", "--app", "x", "--procs", "1",
         "--module", "tests.faults.workload"],
        cwd=ROOT, env=clean_env({"REDFLOW_URL": url}), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # a bad setting: systemd does not restart it
    assert "Traceback" not in out, out
    assert f"bad Redis URL redis://app:***@127.0.0.1:{port}/0" in out and said in out, out
    assert PASSWORD not in out, out


def test_an_unknown_url_scheme_is_a_bad_setting() -> None:
    proc = run_supervisor_once(
        "--app", "x", "--procs", "1", "--module", "tests.faults.workload",
        "--url", f"htp://app:{PASSWORD}@127.0.0.1:{_closed_port()}/0",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # was 1: restarted in a loop by systemd
    assert "Traceback" not in out and "scheme 'htp'" in out, out
    assert PASSWORD not in out, out


def test_a_tls_url_to_a_server_without_tls_says_so(redis_url: str) -> None:
    """``rediss://`` to a plain server: the TLS handshake is never answered (the
    server waits for the end of an inline command), so the supervisor and
    ``redflow`` said only ``Timeout connecting to server``, which reads as a
    network problem."""
    url = redis_url.replace("redis://", f"rediss://app:{PASSWORD}@", 1)
    for out in _both_refuse(url):
        assert "TLS" in out and "redis://" in out, out


@pytest.mark.parametrize(
    ("userinfo", "said"),
    [("", "gives no password"), (f"{PASSWORD}@", "a user name but no password")],
)
def test_a_url_without_the_password_a_server_asks_for_says_so(userinfo: str, said: str) -> None:
    """A server with ``requirepass`` and a URL without the password (forgotten, or
    ``redis://secret@host`` with the ``:`` before it forgotten, which names a user):
    the supervisor and ``redflow`` said ``refused the credentials: HELLO must be
    called with the client already authenticated, ...``, which reads as a wrong
    password although none was sent."""
    with RedisServer(password=PASSWORD) as server:
        url = f"redis://{userinfo}127.0.0.1:{server.port}/0"
        for out in _both_refuse(url):
            assert said in out and "user info after a ':'" in out, out


def _both_refuse(url: str) -> list[str]:
    """The outputs of ``redflow-supervisor`` and ``redflow queues`` given ``url``, run
    side by side: each must exit 1 with no traceback and without the password."""
    args = ["--app", "x", "--procs", "1", "--module", "tests.faults.workload", "--url", url]
    env = clean_env()
    both = [
        subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for module, argv in (
            ("redflow_supervisor", args),
            ("redflow_supervisor.ops", ["queues", "--url", url]),
        )
    ]
    outs = []
    for proc in both:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 1, out
        assert "Traceback" not in out, out
        assert PASSWORD not in out, out
        outs.append(out)
    return outs
