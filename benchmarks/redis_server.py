"""A private ``redis-server`` for the benchmark: free loopback port, no persistence.

The harness never touches any other Redis. After start-up it checks that the
server answering on the port is the process it started (``INFO server``
``process_id``), so a port race can never point the benchmark (and its
FLUSHALL) at somebody else's server.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.procs import ManagedProcess


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, binary: str = "redis-server", workdir: Path | None = None) -> None:
        found = shutil.which(binary)
        if found is None:
            raise RuntimeError(f"{binary!r} not found on PATH")
        self.binary = found
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="redflow-bench-redis-"))
        self.proc: ManagedProcess | None = None
        self.port = 0
        self.version = "?"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 5) -> None:
        last_error = ""
        for _ in range(attempts):
            port = free_port()
            proc = ManagedProcess(
                [
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
                    str(self.workdir),
                    "--loglevel",
                    "warning",
                ],
                env={"PATH": "/usr/bin:/bin"},
                cwd=str(self.workdir),
                log_path=self.workdir / f"redis-{port}.log",
            )
            if self._wait_own(proc, port):
                self.proc = proc
                self.port = port
                return
            last_error = proc.log_tail(5)
            proc.stop(grace=2.0)
        raise RuntimeError(f"could not start redis-server: {last_error}")

    def _wait_own(self, proc: ManagedProcess, port: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                return False
            try:
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                info = client.info("server")
                client.close()
            except redis.RedisError:
                time.sleep(0.05)
                continue
            if int(info.get("process_id", -1)) != proc.pid:
                return False  # somebody else's server answered: never use it
            self.version = str(info.get("redis_version", "?"))
            return True
        return False

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=5.0)
            self.proc = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
