"""Redis-side cost: INFO deltas (commandstats, cpu, memory) and a MONITOR sampler.

Two sources, used for different numbers:

* ``INFO commandstats`` deltas over the timed W1 run give *all* commands per
  run. Commands that Lua scripts (EVAL/EVALSHA/FCALL) issue internally are
  counted there too, as are the harness's own commands; the harness counts
  every command it sends (:class:`CountingRedis`) and subtracts them, drops
  ``INFO`` itself, and subtracts the handler's one counter ``INCRBY`` per run.
* A separate, untimed MONITOR pass (a smaller W1) splits the commands into
  top-level client calls and calls made from inside scripts: MONITOR prints
  script-internal commands with the pseudo-client ``lua``. Commands from the
  harness's own connection and on benchmark keys (``bm:*``) are dropped.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

IGNORED = frozenset({"info", "monitor"})


class CountingRedis:
    """The harness's Redis connection; remembers how many of each command it sent."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.issued: Counter[str] = Counter()

    def call(self, name: str, *args: Any) -> Any:
        self.issued[name.lower()] += 1
        return self.client.execute_command(name, *args)

    def addr(self) -> str:
        info = self.client.client_info()
        return str(info.get("addr", ""))


@dataclass
class Snapshot:
    t: float
    calls: dict[str, int]
    cpu: float
    used_memory: int
    issued: Counter[str] = field(default_factory=Counter)


def _calls(stats: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if isinstance(value, dict):
            out[name] = int(value.get("calls", 0))
    return out


def snapshot(conn: CountingRedis) -> Snapshot:
    r = conn.client
    cmd = r.info("commandstats")
    cpu = r.info("cpu")
    mem = r.info("memory")
    return Snapshot(
        t=time.time(),
        calls=_calls(cmd),
        cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        used_memory=int(mem["used_memory"]),
        issued=Counter(conn.issued),
    )


@dataclass
class CostDelta:
    calls: dict[str, int]
    cpu_s: float
    memory: int
    seconds: float

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def per_run(self, runs: int) -> dict[str, float]:
        runs = max(1, runs)
        return {
            "cmds_per_run": self.total_calls / runs,
            "cpu_us_per_run": self.cpu_s * 1e6 / runs,
        }

    def to_json(self, runs: int) -> dict[str, Any]:
        return {
            **self.per_run(runs),
            "runs": runs,
            "total_calls": self.total_calls,
            "cpu_s": self.cpu_s,
            "memory_delta": self.memory,
            "seconds": self.seconds,
            "calls": dict(sorted(self.calls.items(), key=lambda kv: -kv[1])),
        }


def delta(before: Snapshot, after: Snapshot, payload: dict[str, int] | None = None) -> CostDelta:
    """``after - before`` without INFO/MONITOR, the harness's commands and ``payload``."""
    harness = after.issued - before.issued
    calls: dict[str, int] = {}
    for name, count in after.calls.items():
        if name in IGNORED:
            continue
        n = count - before.calls.get(name, 0) - harness.get(name, 0)
        n -= (payload or {}).get(name, 0)
        if n > 0:
            calls[name] = n
    return CostDelta(
        calls=calls,
        cpu_s=after.cpu - before.cpu,
        memory=after.used_memory - before.used_memory,
        seconds=after.t - before.t,
    )


_LINE = re.compile(r'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?')


class MonitorSampler:
    """Reads MONITOR on a raw socket in a thread and keeps (time, source, command, key)."""

    def __init__(self, host: str, port: int, exclude_addrs: set[str]) -> None:
        self.host = host
        self.port = port
        self.exclude_addrs = exclude_addrs
        self.lines: list[tuple[float, bool, str]] = []  # (ts, from_lua, command)
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        sock.settimeout(None)
        self._sock = sock
        ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("MONITOR did not start")

    def _read(self, ready: threading.Event) -> None:
        assert self._sock is not None
        buf = b""
        started = False
        while True:
            try:
                chunk = self._sock.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(b"\r\n")
            for raw in complete:
                if not started:
                    started = raw == b"+OK"
                    if started:
                        ready.set()
                    continue
                self._parse(raw.decode("utf-8", "replace"))

    def _parse(self, line: str) -> None:
        m = _LINE.match(line)
        if m is None:
            self.dropped += 1
            return
        ts, source, command, key = m.group(1), m.group(2), m.group(3).lower(), m.group(4)
        if source in self.exclude_addrs or command in IGNORED:
            return
        if key is not None and key.startswith("bm:"):
            return  # the benchmark's own counter and timing keys
        self.lines.append((float(ts), source == "lua", command))

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def split(self, start: float, end: float) -> dict[str, Counter[str]]:
        """Commands between ``start`` and ``end`` (server clock), by source."""
        client: Counter[str] = Counter()
        lua: Counter[str] = Counter()
        for ts, from_lua, command in self.lines:
            if start <= ts < end:
                (lua if from_lua else client)[command] += 1
        return {"client": client, "lua": lua}
