"""The processes of a fault case: the supervisors' children (which are busy, which
exited), the leases they hold, and a private Redis server's SIGKILL and restart;
the supervisor arguments the cases share.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import redis

from redflow_supervisor.embedded import probe_server
from tests.faults import ledger
from tests.faults.drivers import TERMINAL, wait_for
from tests.helpers import texts
from tests.process.conftest import Supervisor
from tests.redis_server import RedisServer, find_redis_server

__all__ = [
    "ONE_WORKLOAD_CHILD",
    "SHORT",
    "WAIT_MODULES",
    "ExitWatcher",
    "busy_children",
    "debug_args",
    "restart_redis",
    "running_leases",
    "taken_over",
]

# Arguments of a one-child supervisor on the fault workload (start-up refusal tests).
ONE_WORKLOAD_CHILD = ("--app", "x", "--procs", "1", "--module", "tests.faults.workload")

#: Short settings (lease 1 s, reaper 100 ms, kill_grace 0.5 s, restart backoff
#: 0.1-0.5 s), which every case used to run with; a case about a short lease names
#: them (``args=SHORT``) next to its variant with the defaults.
SHORT = (
    "--lease-ms",
    "1000",
    "--reaper-interval-ms",
    "100",
    "--kill-grace",
    "0.5",
    "--restart-backoff",
    "0.1",
    "--restart-backoff-max",
    "0.5",
)

# Modules of a supervisor that serves the durable-wait workflows too.
WAIT_MODULES = ("tests.faults.workload", "tests.faults.workload_waits")


@functools.cache
def debug_args() -> tuple[str, ...]:
    """``enable-debug-command`` (DEBUG SLEEP, ...) came with Redis 7 (Valkey has it
    too); Redis 6.2 refuses it as a bad directive, and has DEBUG always on."""
    found = probe_server(find_redis_server(), "redis-server")
    if found is not None and found.product == "Redis" and found.version < (7,):
        return ()
    return ("--enable-debug-command", "local")


class ExitWatcher:
    """Notes in the ledger (``exit``) when a child of a watched supervisor is gone.

    A child its supervisor SIGKILLs (a timeout past kill_grace) writes no
    ``handler-end``; this gives its execution an end for the checker. Polled
    every 10 ms, so the time is an upper bound of the death, a few ms late.
    """

    def __init__(self, ledger_dir: Path) -> None:
        self.ledger = ledger.Ledger(ledger_dir)
        self.sups: list[Supervisor] = []
        self._known: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-exits", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            for sup in list(self.sups):
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(sup.pid).children():
                        self._known.setdefault(child.pid, child)
            self._sweep()

    def _sweep(self) -> None:
        for pid, proc in list(self._known.items()):
            try:
                gone = not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            if gone:
                self.ledger.append("exit", pids=[pid])
                del self._known[pid]

    def close(self) -> None:
        """Stop watching; children seen and gone by now are in the ledger."""
        self._stop.set()
        self._thread.join(5)
        self._sweep()
        self.ledger.close()


def busy_children(sup: Supervisor) -> list[tuple[psutil.Process, str]]:
    """(process, run id) of children whose title says they are running a run."""
    out = []
    try:
        kids = psutil.Process(sup.pid).children()
    except psutil.Error:
        return []
    for p in kids:
        try:
            title = " ".join(p.cmdline())
            if " running " in title and p.status() != psutil.STATUS_ZOMBIE:
                out.append((p, title.split()[-1]))
        except psutil.Error:
            continue
    return out


def running_leases(
    raw: redis.Redis, prefix: str, ids: Sequence[str] | None = None
) -> dict[str, bytes]:
    """{run id: lease token} of running runs with a live lease (all of them, or of
    ``ids``): the run hash's ``lease`` field, while its ``leases`` score is not past."""
    tag = "{" + prefix + "}"
    if ids is None:
        ids = texts(raw.zrange(f"{tag}:runs:status:running", 0, -1))
    secs, micros = raw.time()
    now = secs * 1000 + micros // 1000
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(f"{tag}:run:{run_id}", "lease")
            pipe.zscore(f"{tag}:leases", run_id)
        replies = pipe.execute()
    out = {}
    for i, run_id in enumerate(ids):
        token, expiry = replies[2 * i], replies[2 * i + 1]
        if token and expiry is not None and expiry >= now:
            out[run_id] = token
    return out


def taken_over(raw: redis.Redis, prefix: str, snapshot: dict[str, bytes]) -> bool:
    """True once every run of ``snapshot`` (running under a lease at the fault) is
    finished, leased under another token, or moved on by a new execution:
    ``suspended`` (a parent of ``fx-parent`` waits for its child, which a loaded
    machine with a 5 s lease left behind hundreds of queued runs: case 2 timed out
    after 20 s waiting for the stranded runs) or ``scheduled`` (a retry's backoff).
    The reaper puts a stranded run back ``queued``: that is not taken over yet."""
    tag = "{" + prefix + "}"
    ids = list(snapshot)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hget(f"{tag}:run:{run_id}", "status")
            pipe.hget(f"{tag}:run:{run_id}", "lease")
        replies = pipe.execute()
    for i, run_id in enumerate(ids):
        status, token = replies[2 * i], replies[2 * i + 1]
        if status in TERMINAL or status in (b"suspended", b"scheduled"):
            continue
        if token is None or token == snapshot[run_id]:
            return False
    return True


def restart_redis(server: RedisServer, down_for: float) -> tuple[float, float]:
    """SIGKILL ``server``, keep it down ``down_for`` s, start it on the same port and
    data dir; returns (monotonic time of the kill, of the restart)."""
    server.kill()
    t_down = time.monotonic()
    if server.proc is not None and server.proc.stderr is not None:
        server.proc.stderr.close()  # RedisServer.kill leaves the pipe open
    server.proc = None
    wait_for(lambda: time.monotonic() - t_down >= down_for, down_for + 5, "the outage")
    server.start()
    return t_down, time.monotonic()
