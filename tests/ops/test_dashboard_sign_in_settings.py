"""``redflow dashboard``'s sign-in settings as flags and ``RF_DASHBOARD_*``
variables (``supervisor/ops/signin_settings.py``): the session limits (2 h
unused, 12 h in all) and the failed-token limits could only be changed by a
mounted app (``make_app(session_idle=..., login_limits=...)``); the stand-alone
dashboard had no way to set them. Bad values are refused at start, exit status
2, naming the flag or variable, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.ops.conftest import ROOT, TOKEN, Result, cli_env
from tests.ops.web import request, sign_in

Redflow = Callable[..., Result]


@pytest.fixture()
def dashboard_process(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """The real ``redflow dashboard`` on 0.0.0.0 (sign-in on), started with ``args``
    and ``env``; returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        log = tmp_path / f"dashboard{len(procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "redflow_supervisor.ops", "dashboard", "--host", "0.0.0.0",
                 "--port", "0", "--url", redis_url, "--prefix", prefix, *args],
                cwd=ROOT,
                env=cli_env({"RF_DASHBOARD_TOKEN": TOKEN, **(env or {})}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)

        def serving() -> str:
            assert proc.poll() is None, log.read_text()
            m = re.search(r"serving http://[^:]+:(\d+)/", log.read_text())
            return f"http://127.0.0.1:{m.group(1)}/" if m else ""

        return str(wait_until(serving, 20, 0.05, "the dashboard to listen"))

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_session_limits_come_from_flags_and_the_environment(
    dashboard_process: Callable[..., str],
) -> None:
    base = dashboard_process("--session-idle", "1s", env={"RF_DASHBOARD_SESSION_MAX": "30m"})
    cookie, header = sign_in(base)
    assert "Max-Age=1800;" in header + ";", header
    assert request(base, "/runs", headers={"Cookie": cookie}).status == 200
    time.sleep(1.5)
    r = request(base, "/runs", headers={"Cookie": cookie})
    assert r.status == 401, f"a session idle past --session-idle 1s still read: {r}"


def test_the_failed_token_limits_come_from_flags_and_the_environment(
    dashboard_process: Callable[..., str],
) -> None:
    base = dashboard_process("--login-free", "1", env={"RF_DASHBOARD_LOGIN_MAX_WAIT": "3s"})
    assert request(base, "/login", "POST", {"token": "wrong-token-12345"}).status == 403
    r = request(base, "/login", "POST", {"token": TOKEN})
    assert r.status == 429, f"a sign-in after 1 failure with --login-free 1 was not limited: {r}"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--session-idle", "2 hours"], {}, "--session-idle"),
        (["--session-max", "0"], {}, "--session-max"),
        ([], {"RF_DASHBOARD_SESSION_IDLE": "nan"}, "RF_DASHBOARD_SESSION_IDLE"),
        ([], {"RF_DASHBOARD_LOGIN_FREE": "-1"}, "RF_DASHBOARD_LOGIN_FREE"),
        (["--login-free-all", "lots"], {}, "--login-free-all"),
        (["--login-max-wait", "0.1"], {}, "--login-max-wait"),
        (["--session-idle", "13h"], {}, "--session-max"),
    ],
)
def test_bad_values_are_refused_before_serving(
    redflow: Redflow, args: list[str], env: dict[str, str], named: str
) -> None:
    res = redflow("dashboard", "--port", "0", *args, env={"RF_DASHBOARD_TOKEN": TOKEN, **env})
    assert res.code == 2, res
    assert "Traceback" not in res.err and "serving" not in res.err + res.out, res
    assert named in res.err, res
    assert TOKEN not in res.err + res.out, res


def test_the_flags_are_in_the_help(redflow: Redflow) -> None:
    res = redflow("dashboard", "--help")
    assert res.code == 0, res
    for flag in ("--session-idle", "--session-max", "--login-free", "--login-free-all"):
        assert flag in res.out, res
    assert "RF_DASHBOARD_SESSION_IDLE" in res.out and "default 2h" in res.out, res
