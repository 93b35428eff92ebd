"""Redis-side cost: INFO deltas (commandstats, cpu, memory), a MONITOR sampler
and a SLOWLOG sampler.

Three sources, used for different numbers:

* ``INFO commandstats`` deltas over the timed W1 run give *all* commands per
  run. Commands that Lua scripts (EVAL/EVALSHA/FCALL) issue internally are
  counted there too, as are the harness's own commands; the harness counts
  every command it sends (:class:`CountingRedis`) and subtracts them, drops
  ``INFO`` itself, and subtracts the handler's one counter ``INCRBY`` per run.
* A separate, untimed MONITOR pass (a smaller W1) splits the commands into
  top-level client calls and calls made from inside scripts: MONITOR prints
  script-internal commands with the pseudo-client ``lua``. Commands from the
  harness's own connection and on benchmark keys (``bm:*``) are dropped.
* A separate, untimed SLOWLOG pass (``slowlog-log-slower-than 0``) records the
  execution time of every command with its arguments: the Redis time of each
  script or function by name (``FCALL <name>``: commandstats has one ``fcall``
  line for all of them, and ``FUNCTION STATS`` only shows a running script),
  and which share of each command's time was spent inside scripts. Redis 7
  counts a script's inner commands in commandstats (calls *and* usec) on top
  of the script call itself, whose usec already include them; the shares
  measured in this pass turn the timed run's commandstats usec into the time
  of top-level commands only (:func:`top_level_usec`). Slowlog durations are
  taken around the command's execution, so logging them does not inflate
  them (MONITOR would: it is fed from inside the script's run).
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
#: Commands that run a script; their usec include the script's inner commands.
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


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
    usec: dict[str, int] = field(default_factory=dict)


def _stats(stats: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    calls: dict[str, int] = {}
    usec: dict[str, int] = {}
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if isinstance(value, dict):
            calls[name] = int(value.get("calls", 0))
            usec[name] = int(value.get("usec", 0))
    return calls, usec


def snapshot(conn: CountingRedis) -> Snapshot:
    r = conn.client
    cmd = r.info("commandstats")
    cpu = r.info("cpu")
    mem = r.info("memory")
    calls, usec = _stats(cmd)
    return Snapshot(
        t=time.time(),
        calls=calls,
        cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        # The dataset's share (used_memory less client buffers, the script cache and
        # other overhead): a client connecting or leaving between two snapshots moves
        # used_memory by tens of KB, more than a small run count's whole footprint.
        used_memory=int(mem.get("used_memory_dataset", mem["used_memory"])),
        issued=Counter(conn.issued),
        usec=usec,
    )


def top_level_usec(usec: dict[str, float], nested_share: dict[str, float] | None) -> float | None:
    """The Redis time of top-level commands in a commandstats ``usec`` delta.

    ``nested_share[c]`` is the share of command ``c``'s time spent inside
    scripts (from a SLOWLOG pass); that part is already inside the script
    calls' usec. Without the shares the answer is exact only when no script
    ran (then nothing is nested); otherwise it is unknown (``None``).
    """
    if nested_share is None:
        if any(c in SCRIPT_COMMANDS for c in usec):
            return None
        return float(sum(usec.values()))
    return float(sum(u * (1.0 - nested_share.get(c, 0.0)) for c, u in usec.items()))


@dataclass
class CostDelta:
    calls: dict[str, int]
    cpu_s: float
    memory: int
    seconds: float
    #: commandstats usec per command (inner commands of scripts included, see
    #: top_level_usec), the harness's and the payload's share removed.
    usec: dict[str, float] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def per_run(self, runs: int) -> dict[str, float]:
        runs = max(1, runs)
        return {
            "cmds_per_run": self.total_calls / runs,
            "cpu_us_per_run": self.cpu_s * 1e6 / runs,
            "script_us_per_run": sum(u for c, u in self.usec.items() if c in SCRIPT_COMMANDS)
            / runs,
        }

    def redis_us_per_run(self, runs: int, nested_share: dict[str, float] | None) -> float | None:
        """Redis time of top-level commands per run (see :func:`top_level_usec`)."""
        total = top_level_usec(self.usec, nested_share)
        return None if total is None else total / max(1, runs)

    def to_json(self, runs: int) -> dict[str, Any]:
        return {
            **self.per_run(runs),
            "runs": runs,
            "total_calls": self.total_calls,
            "cpu_s": self.cpu_s,
            "memory_delta": self.memory,
            "seconds": self.seconds,
            "calls": dict(sorted(self.calls.items(), key=lambda kv: -kv[1])),
            "usec": dict(sorted(self.usec.items(), key=lambda kv: -kv[1])),
        }


def delta(before: Snapshot, after: Snapshot, payload: dict[str, int] | None = None) -> CostDelta:
    """``after - before`` without INFO/MONITOR, the harness's commands and ``payload``.

    The usec of the removed calls are not known one by one; each command's usec
    shrink in proportion to the calls removed (the harness's MGET polls and the
    handlers' INCRBYs are cheap, uniform commands).
    """
    harness = after.issued - before.issued
    calls: dict[str, int] = {}
    usec: dict[str, float] = {}
    for name, count in after.calls.items():
        if name in IGNORED:
            continue
        total = count - before.calls.get(name, 0)
        n = total - harness.get(name, 0) - (payload or {}).get(name, 0)
        if n > 0:
            calls[name] = n
            spent = after.usec.get(name, 0) - before.usec.get(name, 0)
            usec[name] = spent * n / total
    return CostDelta(
        calls=calls,
        cpu_s=after.cpu - before.cpu,
        memory=after.used_memory - before.used_memory,
        seconds=after.t - before.t,
        usec=usec,
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


#: The address SLOWLOG gives commands run inside a script (the Lua client).
SCRIPT_CLIENT_ADDR = "?:0"
_LIB_PREFIX = re.compile(r"^[A-Za-z]+_[0-9a-f]{8,}_")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def slowlog_label(args: list[str], scripts: dict[str, str] | None = None) -> str:
    """A command's name for the breakdown: scripts and functions by name.

    ``FCALL redflow_<hash>_claim_run ...`` -> ``fcall claim_run`` (a library
    name carrying a hash of its source is shortened); ``EVALSHA <sha> ...`` ->
    ``evalsha <name>`` when ``scripts`` (sha -> name) knows it, else
    ``evalsha <first 8 hex digits>``; anything else -> its lower-case name.
    """
    name = args[0].lower() if args else "?"
    if name in ("fcall", "fcall_ro") and len(args) > 1:
        return f"{name} {_LIB_PREFIX.sub('', args[1])}"
    if name in ("evalsha", "evalsha_ro") and len(args) > 1:
        return f"{name} {(scripts or {}).get(args[1].lower(), args[1][:8])}"
    return name


@dataclass
class SlowlogPhase:
    """Top-level and in-script commands of one phase: label -> [calls, usec]."""

    top: dict[str, list[int]] = field(default_factory=dict)
    nested: dict[str, list[int]] = field(default_factory=dict)
    lost: bool = False  # the slowlog overflowed: some entries are missing

    def add(self, label: str, usec: int, nested: bool) -> None:
        cell = (self.nested if nested else self.top).setdefault(label, [0, 0])
        cell[0] += 1
        cell[1] += usec

    def merged(self, other: SlowlogPhase) -> SlowlogPhase:
        out = SlowlogPhase(lost=self.lost or other.lost)
        for src in (self, other):
            for into, cells in ((out.top, src.top), (out.nested, src.nested)):
                for label, (calls, usec) in cells.items():
                    cell = into.setdefault(label, [0, 0])
                    cell[0] += calls
                    cell[1] += usec
        return out

    def nested_share(self) -> dict[str, float]:
        """Per command name: the share of its time spent inside scripts."""
        top: Counter[str] = Counter()
        for label, (_calls, usec) in self.top.items():
            top[label.split(" ", 1)[0]] += usec
        out: dict[str, float] = {}
        for name, (_calls, usec) in self.nested.items():
            total = usec + top.get(name, 0)
            out[name] = usec / total if total else 1.0
        return out

    def top_usec(self) -> int:
        return sum(usec for _calls, usec in self.top.values())

    def to_json(self, runs: int) -> dict[str, Any]:
        runs = max(1, runs)

        def rows(cells: dict[str, list[int]]) -> list[dict[str, Any]]:
            return [
                {
                    "command": label,
                    "calls_per_run": calls / runs,
                    "us_per_call": usec / calls if calls else 0.0,
                    "us_per_run": usec / runs,
                }
                for label, (calls, usec) in sorted(cells.items(), key=lambda kv: -kv[1][1])
            ]

        return {
            "runs": runs,
            "top_level_us_per_run": self.top_usec() / runs,
            "top": rows(self.top),
            "in_script": rows(self.nested),
            "overflowed": self.lost,
        }


class SlowlogSampler:
    """Logs every command's execution time (``slowlog-log-slower-than 0``).

    Only for untimed passes: logging every command costs Redis time (the
    durations themselves are measured around the execution and stay true).
    The server's settings are restored by :meth:`stop`.
    """

    def __init__(
        self,
        conn: CountingRedis,
        exclude_addrs: set[str],
        max_len: int,
        scripts: dict[str, str] | None = None,
    ) -> None:
        self.conn = conn
        self.exclude_addrs = exclude_addrs
        self.max_len = max_len
        self.scripts = scripts or {}
        self._saved: dict[str, str] = {}

    def start(self) -> None:
        for key in ("slowlog-log-slower-than", "slowlog-max-len"):
            reply = self.conn.call("CONFIG", "GET", key)
            values = reply if isinstance(reply, list) else [k for kv in reply.items() for k in kv]
            self._saved[key] = _text(values[1])
        self.conn.call("CONFIG", "SET", "slowlog-max-len", str(self.max_len))
        self.conn.call("CONFIG", "SET", "slowlog-log-slower-than", "0")
        self.conn.call("SLOWLOG", "RESET")

    def collect(self) -> SlowlogPhase:
        """Everything logged since the last collect (or start), then reset the log."""
        entries = self.conn.client.slowlog_get(self.max_len)
        self.conn.call("SLOWLOG", "RESET")
        phase = SlowlogPhase(lost=len(entries) >= self.max_len)
        for entry in entries:
            addr = _text(entry.get("client_address", ""))
            if addr in self.exclude_addrs:
                continue
            args = _text(entry.get("command", "")).split(" ")
            label = slowlog_label(args, self.scripts)
            if label in IGNORED or label == "slowlog" or label.startswith("config"):
                continue
            if len(args) > 1 and args[1].startswith("bm:"):
                continue  # the benchmark's own keys (counter, handler calls)
            phase.add(label, int(entry.get("duration", 0)), addr == SCRIPT_CLIENT_ADDR)
        return phase

    def stop(self) -> None:
        if not self._saved:
            return
        with contextlib.suppress(redis.RedisError):
            for key, value in self._saved.items():
                self.conn.call("CONFIG", "SET", key, value)
            self.conn.call("SLOWLOG", "RESET")
        self._saved = {}
