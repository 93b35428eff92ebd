"""Passwords never show in CLI or dashboard output; --embedded-redis starts or reuses a server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from redflow_mp import create_client
from redflow_mp.transport import mask_url
from redflow_supervisor.embedded import EmbeddedRedis, alive
from tests.ops.conftest import ROOT, cli_env, run_cli, run_cli_many
from tests.ops.flows import make_registry
from tests.redis_server import RedisServer

PASSWORD = "hunter2-Secret-pw"


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_password_is_masked_in_cli_output(locked_server: RedisServer, prefix: str) -> None:
    url = locked_server.url
    assert PASSWORD in url
    masked = url.replace(PASSWORD, "***")
    client = create_client(url, prefix=prefix, registry=make_registry(), default=False)
    try:
        client.sync_registry(app="ops-test")
        run_id = client.run_by_name("ops-parked", {"n": 1}).id
    finally:
        client.close()
    target = ["--url", url, "--prefix", prefix]
    commands = [
        ["runs", "list"],
        ["runs", "show", run_id],
        ["workflows"],
        ["queues"],
        ["supervisors"],
        ["run", "ops-parked"],
    ]
    argss = [[*cmd, *target] for cmd in commands]
    argss += [[*cmd, "--json", *target] for cmd in commands[:2]]
    for res in run_cli_many(argss):
        assert res.code == 0, res
        assert PASSWORD not in res.out + res.err, res
    res = run_cli(["runs", "cancel", run_id, *target])
    assert res.code == 0 and PASSWORD not in res.out + res.err, res

    wrong = url.replace(PASSWORD, "wrong-Password-x")
    unsynced, refused, anonymous, unreachable = run_cli_many(
        [
            ["run", "nope", *target],
            ["queues", "--url", wrong],
            ["queues", "--url", url.replace(f":{PASSWORD}@", "")],
            ["queues", "--url", f"redis://user:{PASSWORD}@127.0.0.1:1/0"],
        ]
    )
    # a workflow that is not synced: the error names the masked URL
    assert unsynced.code == 1 and f"({masked}, {prefix})" in unsynced.err, unsynced
    assert PASSWORD not in unsynced.err
    assert refused.code == 1, refused
    assert "redis://:***@127.0.0.1" in refused.err and "wrong-Password-x" not in refused.err
    assert anonymous.code == 1 and PASSWORD not in anonymous.err, anonymous
    res = unreachable
    assert res.code == 1
    assert "cannot reach Redis at redis://user:***@127.0.0.1:1/0" in res.err, res
    assert PASSWORD not in res.err


def test_password_is_masked_by_the_dashboard(locked_server: RedisServer, prefix: str) -> None:
    url = locked_server.url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redflow_supervisor.ops",
            "dashboard",
            "--port",
            "0",
            "--quiet",
            "--url",
            url,
            "--prefix",
            prefix,
        ],
        cwd=ROOT,
        env=cli_env({"RF_DASHBOARD_TOKEN": "dashboard-token-1"}),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "redis://:***@127.0.0.1" in line and PASSWORD not in line, line
        assert "actions need the token" in line
        base = re.search(r"serving (http://\S+)", line).group(1)  # type: ignore[union-attr]
        for page in ("runs", "workflows", "queues", "supervisors"):
            with urllib.request.urlopen(base + page, timeout=10) as resp:
                body = resp.read().decode()
            assert "redis://:***@127.0.0.1" in body and PASSWORD not in body
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stderr is not None:
            proc.stderr.close()


def test_embedded_redis_started_and_stopped(tmp_path: Path, prefix: str) -> None:
    state = tmp_path / "state"
    res = run_cli(["queues", "--json", "--embedded-redis", "--state-dir", str(state)])
    assert res.code == 0, res
    assert json.loads(res.out) == []
    m = re.search(
        r"embedded Redis at redis://:\*\*\*@127\.0\.0\.1:(\d+)/0 \(started (Valkey|Redis) "
        r"[\d.]+ from \S+; data in (.+), persistent, append-only file; "
        r"URL with password in (.+)\)",
        res.err,
    )
    assert m, res
    assert m.group(3) == str(state) and m.group(4) == str(state / "redis.url")
    # this invocation started it, so it stopped it on exit (nothing listens on its
    # port any more: a PING without the password would fail either way)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(m.group(1)))) != 0
    assert not (state / "redis.url").exists()
    assert not (state / "redis.dir").exists()


def test_embedded_redis_reused(tmp_path: Path, prefix: str) -> None:
    embedded = EmbeddedRedis(tmp_path / "state")
    url = embedded.ensure()
    try:
        res = run_cli(
            [
                "runs",
                "list",
                "--embedded-redis",
                "--state-dir",
                str(embedded.state_dir),
                "--prefix",
                prefix,
            ]
        )
        assert res.code == 0, res
        shown = re.escape(f"embedded Redis at {mask_url(url)} (reused ") + r"(Valkey|Redis) [\d.]+"
        where = re.escape(
            f"; data in {embedded.state_dir}, persistent, append-only file; "
            f"URL with password in {embedded.url_file})"
        )
        assert re.search(shown + where, res.err), res
        password = urlsplit(url).password
        assert password and password not in res.out + res.err
        assert res.out.strip() == "no runs"
        assert alive(url), "a reused server is left running"
    finally:
        embedded.stop()


def test_embedded_redis_argument_errors(tmp_path: Path) -> None:
    res = run_cli(["queues", "--embedded-redis", "--url", "redis://127.0.0.1:1/0"])
    assert res.code == 2 and "exclude each other" in res.err
    res = run_cli(["queues", "--state-dir", str(tmp_path)])
    assert res.code == 2 and "--state-dir goes with --embedded-redis" in res.err
