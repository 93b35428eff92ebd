"""Fixtures for the operator tools: the ``redflow`` command as a subprocess, a registry
with the ops test workflows (synced), in-process workers, an in-process dashboard."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from redflow_mp import Client, Registry
from redflow_mp.transport import mask_url
from redflow_supervisor.ops.dashboard import DashboardConfig, DashboardServer, make_server
from tests.helpers import WorkerPool, wait_until
from tests.ops.browser import chromium  # noqa: F401 - fixture shared by the browser tests
from tests.ops.flows import make_registry
from tests.process.conftest import supervisor  # noqa: F401 - fixture re-export

ROOT = Path(__file__).resolve().parents[2]
APP = "ops-test"
TOKEN = "test-token-5f1c9d2a"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment minus anything that would steer the CLI (REDFLOW_*, RF_*, REDIS_URL)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDFLOW_", "RF_")) and k != "REDIS_URL"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


#: A guard against a CLI that hangs, not a performance bound: on a loaded machine
#: (a load of 15-20 on 2 cores) the CLI's start-up alone took 20-30 s (0.6 s of
#: CPU), and a 30 s guard failed a `runs watch --timeout 1.5`. The tests' pytest
#: timeout (120 s) bounds the whole.
CLI_TIMEOUT = 90.0


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = CLI_TIMEOUT,
) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "redflow_supervisor.ops", *args],
        cwd=ROOT,
        env=cli_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_cli_many(
    argss: Sequence[Sequence[str]],
    *,
    envs: Sequence[dict[str, str] | None] | None = None,
    timeout: float = CLI_TIMEOUT,
) -> list[Result]:
    """Run several independent ``redflow`` invocations at once (saves start-up time)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "redflow_supervisor.ops", *args],
            cwd=ROOT,
            env=cli_env(envs[i] if envs else None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, args in enumerate(argss)
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        out.append(Result(proc.returncode, stdout, stderr))
    return out


@pytest.fixture()
def registry() -> Registry:
    """Overrides the shared fixture: the ops workflows (so ``client`` and ``workers`` know them)."""
    return make_registry()


@pytest.fixture()
def synced(client: Client) -> Client:
    """The test's client with the ops workflows synced to Redis (as a supervisor would)."""
    client.sync_registry(app=APP)
    return client


@pytest.fixture()
def redflow(redis_url: str, prefix: str) -> Callable[..., Result]:
    """Run ``redflow ARGS --url <test server> --prefix <test prefix>``."""

    def call(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Result:
        return run_cli([*args, "--url", redis_url, "--prefix", prefix], env=env, **kwargs)

    return call


@pytest.fixture()
def ops_workers(synced: Client, workers: WorkerPool) -> WorkerPool:
    """Two in-process workers on the ``ops`` queue (``ops-idle`` is served by nobody)."""
    workers.start(queues=["ops"])
    workers.start(queues=["ops"])
    return workers


@dataclass
class Runs:
    succeeded: str
    failed: str
    queued: str


@pytest.fixture()
def runs(synced: Client, ops_workers: WorkerPool) -> Runs:
    """One succeeded, one failed and one queued run, for real."""
    ok = synced.run_by_name("ops-steps", {"pause": 0})
    bad = synced.run_by_name("ops-fail", {"why": "x"})
    idle = synced.run_by_name("ops-parked", {"n": 1})
    assert ok.result(timeout=15) == {"answer": 42}
    wait_until(lambda: (s := bad.state()) is not None and s.status == "failed", 15, 0.02)
    return Runs(succeeded=ok.id, failed=bad.id, queued=idle.id)


@pytest.fixture()
def dashboard_servers() -> list[tuple[DashboardServer, threading.Thread]]:
    """The servers the ``dashboard`` fixture started (and their threads), in order."""
    return []


@pytest.fixture()
def dashboard(
    client: Client,
    redis_url: str,
    prefix: str,
    dashboard_servers: list[tuple[DashboardServer, threading.Thread]],
) -> Iterator[Callable[..., str]]:
    """Start an in-process dashboard (free port); returns its base URL."""
    started = dashboard_servers

    def start(**kwargs: Any) -> str:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("shown_url", mask_url(redis_url))
        kwargs.setdefault("prefix", prefix)
        server = make_server(client, DashboardConfig(**kwargs), quiet=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.daemon = True
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)
