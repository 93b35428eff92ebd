"""Secrets never stay in ``/proc/<pid>/cmdline`` (what ``ps`` shows to every local
user): each entry point rewrites its title before importing or connecting."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redflow_mp.transport import mask_url
from redflow_supervisor.entry import mask_args
from tests.helpers import wait_until
from tests.ops.conftest import ROOT, TOKEN, cli_env
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(90)

PASSWORD = "Pa55-w0rd-in-argv"
BIN = Path(sys.executable).parent

SUPERVISOR_COMMANDS = {
    "redflow-supervisor": [str(BIN / "redflow-supervisor")],
    "python -m redflow_supervisor": [sys.executable, "-m", "redflow_supervisor"],
}
OPS_COMMANDS = {
    "redflow": [str(BIN / "redflow")],
    "python -m redflow_supervisor.ops": [sys.executable, "-m", "redflow_supervisor.ops"],
}


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def protected() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("command", list(SUPERVISOR_COMMANDS))
def test_supervisor_hides_the_password_while_it_is_still_connecting(
    command: str, tmp_path: Path
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0"
    log = tmp_path / "sup.log"
    cmd = [*SUPERVISOR_COMMANDS[command], "--app", "ps", "--module", "tests.process.flows"]
    proc = _start([*cmd, "--url", url], log)
    try:
        wait_until(
            lambda: "unreachable" in log.read_text() or proc.poll() is not None,
            30,
            message="the supervisor to retry the unreachable Redis",
        )
        assert proc.poll() is None, log.read_text()
        line = _cmdline(proc.pid)
        assert PASSWORD not in line, line
        assert "--url redis://:***@127.0.0.1:" in line, line
        assert "--app ps --module tests.process.flows" in line, line
    finally:
        _stop(proc)
    assert PASSWORD not in log.read_text()


@pytest.mark.parametrize("command", list(OPS_COMMANDS))
@pytest.mark.parametrize("spelling", ["separate", "equals"])
def test_dashboard_hides_the_password_and_the_token(
    command: str, spelling: str, protected: RedisServer, tmp_path: Path
) -> None:
    assert PASSWORD in protected.url
    log = tmp_path / "dash.log"
    if spelling == "separate":
        args = ["dashboard", "--url", protected.url, "--token", TOKEN, "--port", "0"]
    else:
        args = ["dashboard", f"--url={protected.url}", f"--tok={TOKEN}", "--port", "0"]
    proc = _start([*OPS_COMMANDS[command], *args, "--quiet"], log)
    try:
        wait_until(
            lambda: "serving http://" in log.read_text() or proc.poll() is not None,
            30,
            message="the dashboard to serve",
        )
        assert proc.poll() is None, log.read_text()
        line = _cmdline(proc.pid)
        assert PASSWORD not in line and TOKEN not in line, line
        assert "redis://:***@127.0.0.1:" in line and "***" in line.split("--tok", 1)[1], line
        # and it lasts: the title stays masked while the dashboard serves
        time.sleep(0.2)
        assert PASSWORD not in _cmdline(proc.pid)
    finally:
        _stop(proc)
    assert PASSWORD not in log.read_text() and TOKEN not in log.read_text()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pw@h:6379/0",
        "redis://user:pw@h/0",
        "rediss://u:p%40ss@h:6380/1?ssl_cert_reqs=none",
        "redis://h:6379/0?password=pw&db=1",
        "unix:///tmp/r.sock?password=pw",
        "redis://h:6379/0",
        "redis://[::1]:6379/0",
        "redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2",
        "rediss+sentinel://user:p%40w@h1:26379/svc",
        "redis+sentinel://h1,h2/svc",
        "redis://:se/cret@h:6379/0",
        "redis://user:a?b#c@h/0?password=pw",
        "redis://h:6379/0?password=p@ss",
        "redis+sentinel://:p/w@h1:26379,h2/svc",
        "rediss://h:6380/0?ssl_keyfile=/k.pem&ssl_password=pw",
        "redis://secret@h:6379/0",
    ],
)
def test_argv_masking_agrees_with_the_librarys_mask_url(url: str) -> None:
    assert mask_args(["--url", url]) == ["--url", mask_url(url)]
    assert mask_args([f"--url={url}"]) == [f"--url={mask_url(url)}"]
    assert mask_args(["run", url]) == ["run", mask_url(url)]


@pytest.mark.parametrize("url", ["Hunter2Secret", "redis//:Hunter2Secret@h:6379/0"])
def test_a_url_value_without_scheme_is_not_shown_in_the_title(url: str) -> None:
    """``--url redis//:pw@h`` (a typo) or the bare password: the process title
    showed it until the command refused it; now only its length, as the errors."""
    masked = mask_args(["--url", url])
    assert masked == ["--url", mask_url(url)]
    assert "Hunter2Secret" not in masked[1], masked
    assert mask_args([f"--url={url}"]) == [f"--url={mask_url(url)}"]


def test_argv_masking_covers_every_spelling_of_the_options() -> None:
    assert mask_args(["--token", "T0k"]) == ["--token", "***"]
    assert mask_args(["--tok", "T0k", "--u", "redis://:pw@h"]) == [
        "--tok",
        "***",
        "--u",
        "redis://:***@h",
    ]
    assert mask_args(["--token=T0k", "--url=redis://:pw@h"]) == [
        "--token=***",
        "--url=redis://:***@h",
    ]
    # Nothing secret: untouched (titles of ordinary command lines stay as they were).
    plain = ["redflow", "runs", "list", "--timeout", "5", "--prefix", "p"]
    assert mask_args(plain) == plain


SLASHED = ["redis://:{pw}@h:6379/0", "redis://u:{pw}@h/0", "redis+sentinel://:{pw}@h1,h2/svc"]


@pytest.mark.parametrize("template", SLASHED)
@pytest.mark.parametrize("password", ["se/cret", "se?cret", "se#cret", "a/b@c"])
def test_a_password_with_an_unencoded_slash_is_masked(template: str, password: str) -> None:
    """``urlsplit`` ends the host part at the first '/', '?' or '#', so such a password
    was left in the "path": mask_url returned the URL unchanged, ``ps`` showed it,
    and ``redflow`` printed it in "bad Redis URL redis://:se/cret@..."."""
    url = template.format(pw=password)
    for shown in (mask_url(url), *mask_args(["--url", url]), *mask_args([f"--url={url}"])):
        assert password not in shown and "cret" not in shown, shown
    assert mask_url(url).endswith(url.rpartition("@")[2])


def test_the_commands_refuse_such_a_url_without_printing_it() -> None:
    """Both commands ended with redis-py's "Port could not be cast to integer value as
    'se'" (part of the password); ``redflow`` also printed the whole URL unmasked."""
    url = f"redis://:{PASSWORD[:4]}/{PASSWORD[4:]}@127.0.0.1:{_closed_port()}/0"
    procs = [
        subprocess.run(
            [*OPS_COMMANDS["redflow"], "--url", url, "runs", "list"],
            cwd=ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        ),
        subprocess.run(
            [
                *SUPERVISOR_COMMANDS["redflow-supervisor"],
                "--app",
                "a",
                "--module",
                "tests.process.flows",
                "--url",
                url,
            ],
            cwd=ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        ),
    ]
    for proc in procs:
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert PASSWORD[:4] not in out and PASSWORD[4:] not in out, out
        assert "percent-encode" in out, out


def test_a_key_passphrase_in_the_query_is_masked() -> None:
    """``rediss://...?ssl_password=`` (the passphrase of the client's private key,
    which redis-py reads from the URL) was shown as is: by repr(client), every CLI
    message naming the URL and ``ps``."""
    from redflow_mp import create_client

    url = f"rediss://u:{PASSWORD}@127.0.0.1:{_closed_port()}/0?ssl_password=KeyPass-77"
    client = create_client(url, default=False, verify_shards=False)
    try:
        shown = [repr(client), mask_url(url), *mask_args(["--url", url])]
    finally:
        client.close()
    for text in shown:
        assert "KeyPass-77" not in text and PASSWORD not in text, text
        assert "ssl_password=***" in text or text == "--url", text


def test_a_password_of_non_utf8_bytes_is_refused_in_one_line(protected: RedisServer) -> None:
    """Such an argument reaches Python as lone surrogates: both commands ended in a
    UnicodeEncodeError traceback when the password was sent (AUTH)."""
    url = f"redis://:{PASSWORD}\udcff@127.0.0.1:{protected.port}/0"
    commands = [
        [*OPS_COMMANDS["redflow"], "--url", url, "runs", "list"],
        [
            *SUPERVISOR_COMMANDS["redflow-supervisor"],
            *("--app", "a", "--url", url, "--module", "tests.process.flows"),
        ],
    ]
    for cmd in commands:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out
        assert "not valid Unicode" in out and PASSWORD not in out, out
