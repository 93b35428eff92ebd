"""Test helpers: wait by polling with a deadline, run workers in threads, watch
Redis traffic with MONITOR. Nothing here sleeps to synchronise."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis

from redflow_mp import Client, Context, Registry, Worker, create_client, define_workflow
from redflow_mp.claimed import Claimed
from redflow_mp.ids import new_token

T = TypeVar("T")

__all__ = [
    "Monitor",
    "WorkerPool",
    "claim_one",
    "command",
    "command_counts",
    "monitor",
    "run_keys",
    "status_of",
    "text",
    "texts",
    "wait_until",
]


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.005,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises AssertionError naming ``message`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


@contextmanager
def client_of(url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    """A client of ``url`` (a test's own server or proxy; not the default
    client) with ``registry``, closed afterwards."""
    client = create_client(url, prefix=prefix, registry=registry, default=False)
    try:
        yield client
    finally:
        client.close()


class WorkerPool:
    """Starts ``redflow_mp.Worker`` loops in threads and stops all of them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._running: list[tuple[Worker, threading.Thread]] = []
        self.errors: list[BaseException] = []

    def start(self, client: Client | None = None, **kwargs: Any) -> Worker:
        kwargs.setdefault("maintenance", True)
        kwargs.setdefault("block_timeout", 0.1)
        worker = Worker(client if client is not None else self.client, **kwargs)

        def target() -> None:
            try:
                worker.run()
            except BaseException as exc:  # surfaced by stop_all
                self.errors.append(exc)
                raise

        thread = threading.Thread(target=target, name="test-worker", daemon=True)
        thread.start()
        self._running.append((worker, thread))
        return worker

    def stop_all(self, timeout: float = 15.0) -> None:
        running, self._running = self._running, []
        for worker, _ in running:
            worker.stop()
        for worker, _ in running:
            worker.wake()
        for _, thread in running:
            thread.join(timeout)
        alive = [t.name for _, t in running if t.is_alive()]
        assert not alive, f"worker threads did not stop: {alive}"

    def alive(self) -> list[bool]:
        return [t.is_alive() for _, t in self._running]


class Monitor:
    """Collects the lines a ``MONITOR`` connection receives (commands from Lua too)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.lines: list[str] = []
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-monitor", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> Monitor:
        self._sock = socket.create_connection((self.host, self.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        self._thread.start()
        if not self._ready.wait(5):
            raise AssertionError("MONITOR did not start")
        return self

    def _read(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(0.05)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(b"\r\n")
            with self._lock:
                for raw in complete:
                    text = raw.decode("utf-8", "replace")
                    if text == "+OK":
                        self._ready.set()
                        continue
                    self.lines.append(text)

    def snapshot(self) -> list[str]:
        """The lines of every command the server ran before this call: MONITOR
        feeds them asynchronously, so a marker (``ECHO``) is sent on another
        connection and the lines are taken once it came through (a snapshot
        taken at once could miss the last commands of a busy machine)."""
        marker = f"monitor-sync-{uuid.uuid4().hex}"
        with socket.create_connection((self.host, self.port), timeout=5) as conn:
            conn.sendall(f"*2\r\n$4\r\nECHO\r\n${len(marker)}\r\n{marker}\r\n".encode())
            conn.recv(1024)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self._lock:
                if any(marker in line for line in self.lines):
                    self.lines = [line for line in self.lines if marker not in line]
                    return list(self.lines)
            time.sleep(0.005)
        raise AssertionError("the MONITOR feed did not catch up within 5 s")

    def clear(self) -> None:
        with self._lock:
            self.lines.clear()

    def stop(self) -> list[str]:
        try:  # synced while the server answers; as collected otherwise
            lines = self.snapshot() if self._thread.is_alive() else self.lines
        except (OSError, AssertionError):
            lines = self.lines
        self._stop.set()
        self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        return list(lines)


@contextmanager
def monitor(url: str) -> Iterator[Monitor]:
    mon = Monitor(url).start()
    try:
        yield mon
    finally:
        mon.stop()


def run_keys(raw: redis.Redis, pattern: str) -> list[str]:
    """Every key matching ``pattern`` (SCAN), decoded and sorted."""
    return sorted(k.decode() for k in raw.scan_iter(match=pattern, count=1000))


def command(raw: redis.Redis, *args: str | bytes | int | float) -> Any:
    """``raw.execute_command(*args)``, callable from typed code: redis-py leaves
    ``execute_command`` unannotated, so mypy --strict refuses a direct call."""
    execute: Callable[..., Any] = raw.execute_command
    return execute(*args)


_NOT_COUNTED = frozenset(
    {"info", "config", "fcall", "evalsha", "eval", "script", "function", "hello", "client",
     "auth", "select", "ping"}
)  # fmt: skip


def command_counts(raw: Any, action: Callable[[], object]) -> dict[str, int]:
    """Calls per Redis command (those issued from Lua included) made while ``action``
    runs, from ``INFO commandstats`` reset just before (the script calls themselves,
    FCALL/EVALSHA, connection set-up, script loading and the stats commands are left
    out). Assert on counts, not time:
    a command that scans a collection shows up here whatever the machine's speed."""
    if isinstance(raw, redis.RedisCluster):  # --redis-topology=cluster: every node, summed
        raw.config_resetstat(target_nodes=redis.RedisCluster.ALL_NODES)
        action()
        per_node: Any = raw.info("commandstats", target_nodes=redis.RedisCluster.ALL_NODES)
        tables = list(per_node.values())
    else:
        raw.config_resetstat()
        action()
        tables = [raw.info("commandstats")]
    out: dict[str, int] = {}
    for stats in tables:
        for name, fields in stats.items():
            cmd = str(name).removeprefix("cmdstat_")
            if cmd.split("|")[0] in _NOT_COUNTED:
                continue
            out[cmd] = out.get(cmd, 0) + int(fields["calls"])
    return out


def server_cpu_ms(raw: Any) -> float:
    """CPU time (user + system, ms) the Redis server (every node, summed) has used so
    far, from ``INFO cpu``: its main thread when reported (Redis 7), else the
    process. Unlike the wall time SLOWLOG reports, it does not grow while the server
    waits for a core on a loaded machine: bound a script's work with it, not with
    SLOWLOG."""
    if isinstance(raw, redis.RedisCluster):
        per_node: Any = raw.info("cpu", target_nodes=redis.RedisCluster.ALL_NODES)
        tables = list(per_node.values())
    else:
        tables = [raw.info("cpu")]
    total = 0.0
    for cpu in tables:
        user = cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])
        system = cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"])
        total += (float(user) + float(system)) * 1000
    return total


def cpu_ms_of(raw: Any, action: Callable[[], object]) -> float:
    """Redis CPU time (ms, :func:`server_cpu_ms`) spent while ``action`` runs."""
    before = server_cpu_ms(raw)
    action()
    return server_cpu_ms(raw) - before


def decode_cpu_ms(raw: Any, key: str, field: str) -> float:
    """Calibration: the Redis CPU time (ms) of one script call that reads the hash
    field and decodes its JSON (cjson), the least of three: what a script that
    decodes it pays, on this server, on this machine, now."""
    script = "local v = redis.call('HGET', KEYS[1], ARGV[1]) cjson.decode(v) return #v"
    sha = raw.script_load(script)
    raw.evalsha(sha, 1, key, field)  # loaded and warm
    return min(cpu_ms_of(raw, lambda: raw.evalsha(sha, 1, key, field)) for _ in range(3))


def status_index_reads(raw: Any, action: Callable[[], object]) -> list[list[bytes]]:
    """The ``ZRANGE`` reads of a ``runs:status:*`` index that ``action`` made, each
    split into its arguments (SLOWLOG at 0 logs every command while it runs, and
    its length is raised for the while: at the default 128 entries, the commands
    of a longer action, or of another test's threads still winding down, pushed
    the reads out of the log). Exceptions of ``action`` pass through, after the
    log settings are restored."""
    old = str(raw.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"])
    old_len = str(raw.config_get("slowlog-max-len")["slowlog-max-len"])
    raw.config_set("slowlog-max-len", 1_000_000)
    raw.config_set("slowlog-log-slower-than", 0)  # every command, with its arguments
    raw.slowlog_reset()
    try:
        action()
    finally:
        logged = raw.slowlog_get(1_000_000)
        raw.config_set("slowlog-log-slower-than", old)
        raw.config_set("slowlog-max-len", old_len)
        raw.slowlog_reset()
    return [
        e["command"].split()
        for e in logged
        if e["command"].upper().startswith(b"ZRANGE ") and b":runs:status:" in e["command"]
    ]


def text(value: Any) -> str:
    """A redis-py reply item (bytes under our clients) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: Any) -> list[str]:
    """Reply items as a list of str (for redis-py's loosely typed list replies)."""
    return [text(v) for v in values]


def run_status(client: Client, run_id: str) -> str | None:
    """The run's status as the client reads it (None for an unknown run)."""
    state = client.get_run(run_id)
    return None if state is None else state.status.value


def status_of(raw: redis.Redis, client: Client, run_id: str) -> str | None:
    """The ``status`` field of ``run:<id>`` straight from Redis (None when absent)."""
    value = raw.hget(client.keys.run(run_id), "status")
    return value.decode() if isinstance(value, bytes) else None


def claim_one(client: Client, queue: str, lease_ms: int = 60_000) -> Claimed:
    """Claim the next run of ``queue`` with the claim script, under a new token
    (asserts there is one)."""
    _, claimed = client.scripts.claim((queue,), lease_ms, new_token())
    assert claimed is not None
    return claimed


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind``: asyncio's own, or uvloop's (whose transports
    hold no Python socket: libuv owns the descriptor). uvloop is in the dev extra:
    the test is skipped only where it cannot be imported."""
    if kind == "uvloop":
        import pytest

        uvloop = pytest.importorskip("uvloop")
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def aclose_in_fork(ac: Any) -> str:
    """Await ``ac.aclose()`` in a forked child (in a loop of its own); what it did
    there: "no error", or the repr of what it raised (sent back through a pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the outcome of aclose() through the pipe, then go
        try:
            try:
                asyncio.run(ac.aclose())
                outcome = "no error"
            except BaseException as exc:
                outcome = repr(exc)
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    return outcome


def _noop(ctx: Context[Any]) -> None:
    return None


def registry_of(*names: str) -> Registry:
    """A registry of no-op workflows named ``names`` (for syncs and withdrawals)."""
    reg = Registry()
    for name in names:
        define_workflow(name, registry=reg)(_noop)
    return reg


#: What one HSCAN reply of a paged read may bring at least: a page of about
#: 1 MiB plus one record more (COUNT is a hint: a bucket comes whole), with headroom.
HSCAN_PER_CALL = 4 << 20


def hscan_bound(raw: redis.Redis, key: str) -> int:
    """The most bytes one HSCAN call of a paged read of ``key`` may bring:
    :data:`HSCAN_PER_CALL`, or more where the server cannot page finer: the most
    one ``HSCAN ... COUNT 1`` of ``key`` brings. Redis 7 brings a record or two
    a call; Valkey 8.1+ a bucket of its hash table, up to 7 records (CI saw 6 MiB
    calls on Valkey 9 of 24 records of 1 MiB, where a read in one call is 25 MB)."""
    cursor, most = 0, 0
    while True:
        cursor, page = cast(tuple[int, dict[bytes, bytes]], raw.hscan(key, cursor, count=1))
        most = max(most, sum(len(k) + len(v) for k, v in page.items()))
        if not cursor:
            return max(HSCAN_PER_CALL, most + (64 << 10))


class HscanPages:
    """A redis-py client that notes the bytes of each HSCAN reply (the page sizes
    of a query plan driven through it: ``queries.drive(HscanPages(r), plan)``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pages: list[int] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name != "hscan":
            return attr

        def hscan(*args: Any) -> Any:
            cursor, found = attr(*args)
            self.pages.append(sum(len(k) + len(v) for k, v in found.items()))
            return cursor, found

        return hscan
