"""Redis ACL users with exactly the permissions docs/operations.md ("Redis ACL")
documents: the supervisor, a client and the ``redflow`` command work as the
application user, and the ``redflow`` inspection commands as the read-only
viewer, with nothing refused in the server's ACL LOG; a user missing a
permission gets one line naming the command, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from redflow_mp import create_client
from tests.process import flows
from tests.process.conftest import ROOT, Supervisor, clean_env, run_supervisor_once, wait_until
from tests.redis_server import RedisServer

# 15 CLI processes (a Python start-up each): a loaded machine took past the default
# 120 s (each start-up 0.6 s of CPU took 17 s beside a full test suite).
pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

PASSWORD = "acl-test-9f2b7c41d0"
DOC = ROOT / "docs" / "operations.md"


def documented(role: str, prefix: str) -> list[str]:
    """The rules of the ``ACL SETUSER <role> ...`` line of the docs, for ``prefix``."""
    text = DOC.read_text()
    found = re.search(rf"^\s*ACL SETUSER {role} on >PASSWORD (.+)$", text, re.M)
    assert found, f"docs/operations.md has no 'ACL SETUSER {role} ...' line"
    return found.group(1).replace("{etl}", "{" + prefix + "}").split()


def _user(admin: redis.Redis, name: str, rules: list[str]) -> str:
    admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", *rules)  # type: ignore[no-untyped-call]
    return (
        f"redis://{name}:{PASSWORD}@127.0.0.1:{admin.connection_pool.connection_kwargs['port']}/0"
    )


def _redflow(url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redflow_supervisor.ops", *args, "--url", url, "--prefix", prefix],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("shards", [1, 2])
def test_the_documented_acl_users_can_do_their_jobs(
    server: RedisServer, tmp_path: Path, shards: int
) -> None:
    prefix = "etlacl"
    # with shards > 1, the docs add the other shards' tags: ~{etl~*}:* and &{etl~*}:*
    extra = [f"~{{{prefix}~*}}:*", f"&{{{prefix}~*}}:*"] if shards > 1 else []
    admin = server.client()
    app_url = _user(admin, "etl", [*documented("etl", prefix), *extra])
    viewer_extra = ["%R" + extra[0], extra[1]] if extra else []  # the viewer reads only
    viewer_url = _user(admin, "etl-viewer", [*documented("etl-viewer", prefix), *viewer_extra])
    admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
    args = ["--shards", str(shards)]
    sup = Supervisor(app_url, prefix, tmp_path / "sup.log", procs=2, args=args).start()
    client = create_client(app_url, prefix=prefix, default=False, shards=shards)
    try:
        sup.wait_workers(2)
        handles = [flows.pid.run(None, client=client) for _ in range(5)]
        assert all(h.result(timeout=30) for h in handles)
        failed = flows.broken.run(None, client=client)
        with pytest.raises(Exception, match="broken on purpose"):
            failed.result(timeout=30)
        for args in (
            ["runs", "list"],
            ["runs", "show", handles[0].id],
            ["workflows"],
            ["queues"],
            ["supervisors"],
            ["run", "pid", "--wait", "--timeout", "30"],
            ["runs", "retry", failed.id],
        ):
            res = _redflow(app_url, prefix, *args)
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        for args in (
            ["runs", "list"],
            ["runs", "list", "--status", "failed"],
            ["runs", "show", failed.id],
            ["runs", "watch", handles[0].id, "--timeout", "10"],
            ["workflows"],
            ["queues"],
            ["supervisors"],
        ):
            res = _redflow(viewer_url, prefix, *args)
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        log = admin.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
        assert not log, f"something the documented ACL refused: {log[:3]}"
        assert "Traceback" not in sup.log(), sup.log()
        assert PASSWORD not in sup.log()
        refused = _redflow(viewer_url, prefix, "run", "pid")  # the viewer may not enqueue
        assert refused.returncode == 1, refused
        assert "refused a command to this user" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and PASSWORD not in refused.stderr
    finally:
        sup.stop()
        client.close()
        admin.close()


def test_a_user_missing_a_permission_gets_one_line(server: RedisServer) -> None:
    admin = server.client()
    url = _user(admin, "weak", ["resetkeys", "~{weak}:*", "+@read", "+@write", "+@connection"])
    admin.close()
    done = run_supervisor_once(
        "--app",
        "t",
        "--procs",
        "1",
        "--module",
        "tests.process.flows",
        "--url",
        url,
        "--prefix",
        "weak",
    )
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert "refused a command to this user" in done.stderr and "Redis ACL" in done.stderr, (
        done.stderr
    )
    assert PASSWORD not in done.stderr + done.stdout


def test_a_user_without_the_channels_is_refused_at_start(server: RedisServer) -> None:
    """The documented rules but for ``&{prefix}:*`` (channels are reset): the
    supervisor started, and every finish of a run failed at its PUBLISH of
    ``run-done`` after its writes; the worker crashed at each run (one run per
    child process, a traceback naming no fix). It is refused at start now."""
    prefix = "nochan"
    admin = server.client()
    rules = [r for r in documented("etl", prefix) if not r.startswith("&")]
    url = _user(admin, "nochan", rules)
    admin.close()
    args = ["--app", "t", "--procs", "1", "--module", "tests.process.flows"]
    try:
        done = run_supervisor_once(*args, "--url", url, "--prefix", prefix, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the supervisor started without the run-done channels") from None
    assert done.returncode == 1, done
    assert "refused a command to this user" in done.stderr and "channel" in done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout


def test_a_user_without_blocking_commands_is_refused_at_start(server: RedisServer) -> None:
    """The documented rules minus ``BLPOP`` (an ACL template without ``@blocking``):
    the supervisor started, each child crashed with a traceback at its first idle
    wait, and the supervisor went FATAL after five restarts, with no line naming
    the command. It is refused at start with one line now."""
    prefix = "noblock"
    admin = server.client()
    url = _user(admin, "noblock", [*documented("etl", prefix), "-blpop"])
    admin.close()
    args = ["--app", "t", "--procs", "1", "--module", "tests.process.flows"]
    done = run_supervisor_once(*args, "--url", url, "--prefix", prefix, timeout=60)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout, done.stdout[-2000:]
    assert "refused a command to this user" in done.stderr and "blpop" in done.stderr


def test_a_permission_taken_away_at_runtime_is_one_line_per_child(
    server: RedisServer, tmp_path: Path
) -> None:
    """BLPOP refused after start (an ACL change): the child leaves with one line
    naming the command, not a traceback."""
    prefix = "lateacl"
    admin = server.client()
    url = _user(admin, "late", documented("etl", prefix))
    sup = Supervisor(url, prefix, tmp_path / "sup.log", procs=1).start()
    try:
        sup.wait_workers(1)
        admin.execute_command("ACL", "SETUSER", "late", "-blpop")  # type: ignore[no-untyped-call]
        wait_until(lambda: "refused a command to this user" in sup.log(), 20, message="the line")
        admin.execute_command("ACL", "SETUSER", "late", "+blpop")  # type: ignore[no-untyped-call]
        assert "blpop" in sup.log() and "Traceback" not in sup.log(), sup.log()[-3000:]
    finally:
        sup.stop()
        admin.close()
