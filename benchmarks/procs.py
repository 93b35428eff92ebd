"""Processes the harness starts: each in its own session (process group), always stopped.

Every process is started with ``start_new_session=True`` so that a Ctrl-C in
the terminal reaches only the harness, which then stops its children in order,
and so that ``killpg`` reaches a worker's whole tree (pool children included).
Stopping is TERM to the group, a grace period, then KILL to the group.
``stop_all`` runs from ``finally`` blocks and from ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import psutil

_LIVE: list[ManagedProcess] = []


class ManagedProcess:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: str,
        log_path: Path,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=self._log if stdout is None else stdout,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The leader and all its descendants (empty once the leader is gone)."""
        try:
            leader = psutil.Process(self.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.Error:
            return []

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """TERM the group, wait up to ``grace`` s for the leader, then KILL the group."""
        if self in _LIVE:
            _LIVE.remove(self)
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Whatever is left in the group (a pool child that outlived its parent).
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        if not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_many(processes: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """Stop several process groups concurrently (TERM all, wait, KILL the rest)."""
    for proc in processes:
        if proc in _LIVE:
            _LIVE.remove(proc)
        if proc.alive():
            proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        remaining = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=remaining)
    for proc in processes:
        proc.stop(grace=0.0)


def stop_all() -> None:
    stop_many(list(reversed(_LIVE)), grace=5.0)


atexit.register(stop_all)


def install_signal_handlers() -> None:
    """Turn INT/TERM/HUP into KeyboardInterrupt so ``finally`` blocks run and clean up.

    SIGINT is set explicitly too: a shell starts background jobs with SIGINT
    ignored, and Python then never raises KeyboardInterrupt.
    """

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def tree_processes(groups: Sequence[ManagedProcess]) -> list[psutil.Process]:
    out: list[psutil.Process] = []
    for group in groups:
        out.extend(group.tree())
    return out


def tree_cpu_seconds(procs: Sequence[psutil.Process], *, reaped: bool = True) -> float:
    """CPU seconds of ``procs`` (with the children they have reaped, if ``reaped``)."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
    return total


def split_cpu_seconds(groups: Sequence[ManagedProcess], has_parent: bool) -> tuple[float, float]:
    """CPU seconds of (the supervising parent, the worker processes).

    With ``has_parent`` (one process group whose leader supervises worker
    processes: Celery main, Dramatiq main, Huey consumer, redflow arbiter) the
    leader's own CPU is the parent's, and everything else (its descendants, and
    the children it has reaped) is the workers'. Without a parent (RQ, arq:
    one group per worker) every process is a worker and the parent's share is 0.
    """
    parent = 0.0
    workers = 0.0
    for group in groups:
        tree = group.tree()
        for i, proc in enumerate(tree):
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            own = t.user + t.system
            reaped = t.children_user + t.children_system
            if has_parent and i == 0:
                parent += own
                workers += reaped
            else:
                workers += own + reaped
    return parent, workers


def settle(
    groups: Sequence[ManagedProcess],
    expected: int,
    *,
    timeout: float = 30.0,
    window: float = 0.25,
    quiet_cores_per_proc: float = 0.35,
) -> tuple[bool, float]:
    """Wait until the worker trees are started and idle.

    Idle means: at least ``expected`` processes, the same set of pids over two
    consecutive ``window``s, and CPU use over each window below
    ``quiet_cores_per_proc`` cores per process (start-up imports run at one core
    per process; an idle poller such as arq at 1 ms uses far less). Returns
    (settled, seconds waited).
    """
    start = time.monotonic()
    quiet_windows = 0
    prev_pids: set[int] = set()
    prev_cpu = -1.0
    while time.monotonic() - start < timeout:
        if not any(g.alive() for g in groups):
            raise RuntimeError("worker processes exited while starting")
        procs = tree_processes(groups)
        pids = {p.pid for p in procs}
        cpu = tree_cpu_seconds(procs, reaped=False)
        if len(pids) >= expected and pids == prev_pids and prev_cpu >= 0:
            used = (cpu - prev_cpu) / window
            if used < quiet_cores_per_proc * max(1, len(pids)):
                quiet_windows += 1
            else:
                quiet_windows = 0
        else:
            quiet_windows = 0
        if quiet_windows >= 2:
            return True, time.monotonic() - start
        prev_pids, prev_cpu = pids, cpu
        time.sleep(window)
    return False, time.monotonic() - start


def rss_snapshot(groups: Sequence[ManagedProcess]) -> dict[str, object]:
    """RSS of the parent (when the system has one) and of every child, in MiB."""
    leaders: list[float] = []
    children: list[float] = []
    for group in groups:
        tree = group.tree()
        for i, proc in enumerate(tree):
            try:
                rss = proc.memory_info().rss / (1024 * 1024)
            except psutil.Error:
                continue
            (leaders if i == 0 else children).append(rss)
    return {"leaders": leaders, "children": children}


def _cpu_by_pid() -> tuple[dict[int, float], dict[int, float]]:
    """CPU seconds of the harness's own tree (with the children they reaped) and of
    the kernel threads, by pid."""
    me = psutil.Process()
    ours: dict[int, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        ours[proc.pid] = t.user + t.system + t.children_user + t.children_system
    kernel: dict[int, float] = {}
    for proc in psutil.process_iter(["pid", "ppid"]):
        if proc.info["pid"] != 2 and proc.info["ppid"] != 2:
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        kernel[proc.info["pid"]] = t.user + t.system
    return ours, kernel


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


class CpuMeter:
    """How much CPU other programs used while a benchmark phase ran.

    ``foreign_cores`` = (machine user+nice+system time) - (CPU of the harness
    and everything it started, reaped children included) - (kernel threads),
    divided by wall time. Interrupt time is left out, so the kernel's work for
    the benchmark's own loopback traffic is not mistaken for disturbance.
    ``steal_cores`` is the hypervisor's steal time.
    """

    def __init__(self) -> None:
        self.t0 = 0.0
        self.busy0 = 0.0
        self.steal0 = 0.0
        self.ours0: dict[int, float] = {}
        self.kernel0: dict[int, float] = {}

    @staticmethod
    def _machine() -> tuple[float, float]:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system, getattr(t, "steal", 0.0)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = self._machine()
        self.ours0, self.kernel0 = _cpu_by_pid()

    def stop(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self.t0)
        busy, steal = self._machine()
        ours, kernel = _cpu_by_pid()
        own = _delta(self.ours0, ours)
        kthreads = _delta(self.kernel0, kernel)
        busy -= self.busy0
        return {
            "wall_s": wall,
            "busy_cores": busy / wall,
            "own_cores": own / wall,
            "kernel_thread_cores": kthreads / wall,
            "foreign_cores": max(0.0, busy - own - kthreads) / wall,
            "steal_cores": (steal - self.steal0) / wall,
        }
