"""examples/demo.py (issue 16 #2): the same app and prefix as the `redflow` session
of docs/operations.md, its keys removed at the end (and nothing else) unless --keep,
which says how to look at them with ``redflow``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import redis

from tests.ops.conftest import ROOT, cli_env, run_cli

pytestmark = pytest.mark.timeout(240)

DEMO_KEYS = "{redflow-demo}:*"


def _demo(redis_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "examples/demo.py", "--url", redis_url, "--runs", "2", *extra],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


def _demo_keys(raw: redis.Redis) -> list[bytes]:
    return list(raw.scan_iter(match=DEMO_KEYS, count=1000))


def _libraries(raw: redis.Redis) -> list[str]:
    """The names of the server's function libraries."""
    libraries = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in raw.function_list()]
    return [lib[b"library_name"].decode() for lib in libraries]


def test_demo_keeps_its_keys_only_when_asked_and_removes_nothing_else(
    redis_url: str, raw: redis.Redis
) -> None:
    raw.delete(*(_demo_keys(raw) or [b"-"]))
    # the worker's server is shared: another test may have loaded a library
    libraries_before = set(_libraries(raw))
    raw.set("someone-elses:key", "mine")
    raw.set("{another-prefix}:workflows", "x")
    try:
        kept = _demo(redis_url, "--keep")
        assert kept.returncode == 0, kept.stderr
        assert "2 runs done" in kept.stdout
        m = re.search(
            r"kept (\d+) keys under the prefix redflow-demo; look at them with:", kept.stdout
        )
        assert m and int(m.group(1)) == len(_demo_keys(raw)) > 0, kept.stdout
        hint = f"REDFLOW_URL={redis_url} REDFLOW_PREFIX=redflow-demo redflow runs list"
        assert hint in kept.stdout
        # The hint works: docs/operations.md's session view of the demo's runs.
        listed = run_cli(
            ["runs", "list"], env={"REDFLOW_URL": redis_url, "REDFLOW_PREFIX": "redflow-demo"}
        )
        assert listed.code == 0 and listed.out.count("demo-etl") >= 2, listed
        workflows = run_cli(["workflows", "--url", redis_url, "--prefix", "redflow-demo"])
        assert re.search(r"demo-etl\s+demo\s+.*\sdemo\s", workflows.out), workflows

        cleaned = _demo(redis_url)
        assert cleaned.returncode == 0, cleaned.stderr
        m = re.search(
            r"removed (\d+) keys under the prefix redflow-demo \(nothing else\)", cleaned.stdout
        )
        assert m and int(m.group(1)) > 0, cleaned.stdout
        assert _demo_keys(raw) == []
        assert raw.get("someone-elses:key") == b"mine"
        assert raw.get("{another-prefix}:workflows") == b"x"
        # No server-global state either: no function library (EVALSHA by default).
        names = [name for name in _libraries(raw) if name not in libraries_before]
        assert not [name for name in names if name.startswith("redflow_")], names
    finally:
        raw.delete("someone-elses:key", "{another-prefix}:workflows", *_demo_keys(raw))
