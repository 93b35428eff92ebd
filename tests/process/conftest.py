"""Fixtures for tests that run the real supervisor as a separate process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from redflow_mp import Client, create_client
from tests import helpers
from tests.pdeath import orphan_proof
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_supervisor_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m redflow_supervisor ARGS`` to its end (for start-up refusals),
    with output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "redflow_supervisor", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Supervisor:
    """``python -m redflow_supervisor`` under its own session (process group)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        log_path: Path,
        *,
        procs: int = 2,
        modules: Sequence[str] = ("tests.process.flows",),
        app: str = "test",
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "redflow_supervisor",
            "--app",
            app,
            "--procs",
            str(procs),
            "--prefix",
            prefix,
        ]
        if url:  # "": none (--embedded-redis, which excludes a URL)
            self.cmd += ["--url", url]
        for module in modules:
            self.cmd += ["--module", module]
        self.cmd += list(args)
        self.env = clean_env(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Supervisor:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            orphan_proof(self.cmd),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            try:
                if " worker " in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def wait_workers(self, n: int, timeout: float = 20.0) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.workers()
            if len(found) == n:
                return found
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"expected {n} workers, found {len(self.workers())}\n{self.log()}")

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.kill_group(signal.SIGKILL)  # stragglers in the group
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture()
def supervisor(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def start(
        *,
        procs: int = 2,
        modules: Sequence[str] = ("tests.process.flows",),
        app: str = "test",
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        prefix_override: str | None = None,
    ) -> Supervisor:
        sup = Supervisor(
            "" if "--embedded-redis" in args else redis_url,
            prefix_override or prefix,
            tmp_path / f"supervisor-{len(started)}.log",
            procs=procs,
            modules=modules,
            app=app,
            args=args,
            env=env,
        )
        started.append(sup.start())
        return sup

    yield start
    for sup in started:
        sup.stop()


@dataclass(frozen=True)
class Trouble:
    """What :func:`under_trouble` started: the supervisor, a raw connection to its
    server (to end the trouble), a client (to start runs)."""

    sup: Supervisor
    raw: redis.Redis
    client: Client


@contextlib.contextmanager
def under_trouble(
    server: RedisServer, tmp_path: Path, prefix: str, procs: int
) -> Iterator[Trouble]:
    """A supervisor on ``server`` serving ``tests.process.flows_trouble`` (whose
    ``ends-under-oom`` handler makes Redis refuse writes: ``maxmemory`` 1), its
    ``procs`` children ready, logging to ``tmp_path / "supervisor.log"``. On exit
    Redis takes writes again and everything is closed and stopped."""
    sup = Supervisor(
        server.url,
        prefix,
        tmp_path / "supervisor.log",
        procs=procs,
        modules=("tests.process.flows_trouble",),
    ).start()
    raw = server.client()
    client = create_client(server.url, prefix=prefix, default=False)
    try:
        sup.wait_workers(procs)
        yield Trouble(sup, raw, client)
    finally:
        raw.config_set("maxmemory", 0)
        raw.close()
        client.close()
        sup.stop()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> Any:
    """:func:`tests.helpers.wait_until`, polling every 10 ms: a process test's
    predicate reads another process (its log, its children, Redis)."""
    return helpers.wait_until(predicate, timeout, interval, message)
