"""Refresh this supervisor's status record in Redis (``supervisor:<id>``, with a
TTL), read by ``redflow supervisors`` and the dashboard: pid, mode, leadership
and every child's pid, slot, state, current run, RSS, CPU, runs done and
restarts (RSS and CPU measured with psutil)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import psutil

from redflow_mp.client import Client

from ..status import (
    ChildStatus,
    SupervisorStatus,
    remove_supervisor_status,
    write_supervisor_status,
)

__all__ = ["ChildStatus", "ProcessSampler", "StatusDuty", "supervisor_id"]


class StatusDuty:
    name = "status"

    def __init__(
        self, client: Client, snapshot: Callable[[], SupervisorStatus], interval: float = 2.0
    ) -> None:
        self.client = client
        self.snapshot = snapshot
        self.interval = interval
        self.written_id: str | None = None

    def tick(self, now: float) -> float:
        status = self.snapshot()
        write_supervisor_status(self.client, status)
        self.written_id = status.id
        return now + self.interval

    def remove(self) -> None:
        if self.written_id is not None:
            remove_supervisor_status(self.client, self.written_id)


class ProcessSampler:
    """CPU percent and RSS of processes, sampled between calls (no threads)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int) -> tuple[int, float]:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = psutil.Process(pid)
                self._procs[pid] = proc
                proc.cpu_percent(None)
            return int(proc.memory_info().rss), float(proc.cpu_percent(None))
        except psutil.Error:
            self._procs.pop(pid, None)
            return 0, 0.0

    def forget(self, alive: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in alive:
                del self._procs[pid]


def supervisor_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
