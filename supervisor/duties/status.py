"""What a supervisor reports about itself.

- Its status record in Redis (``supervisor:<id>``, with a TTL), refreshed by
  :class:`StatusDuty` and read by ``redflow supervisors`` and the dashboard:
  pid, mode, leadership and every child's pid, slot, state, current run, RSS,
  CPU, runs done and restarts (RSS and CPU measured with psutil); its times
  are on Redis's clock (one ``TIME`` per refresh), as its readers compare them
  with that clock.
- The gauges of its ``/metrics`` page (:func:`gauges`), read at scrape time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import redis

from redflow_mp import __version__
from redflow_mp.admin import RunQueues
from redflow_mp.client import Client
from redflow_mp.depths import read_depths
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.metrics import Labels
from redflow_mp.registry import Registry

if TYPE_CHECKING:
    import psutil

from ..board import Board
from ..children import Child
from ..status import (
    ChildStatus,
    SupervisorStatus,
    remove_supervisor_status,
    write_supervisor_status,
)

__all__ = [
    "ChildStatus",
    "ProcessSampler",
    "StatusDuty",
    "gauges",
    "supervisor_id",
    "supervisor_status",
]

log = logging.getLogger("redflow_supervisor")


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
        _on_redis_clock(status, self.client.server_time_ms() - int(time.time() * 1000))
        write_supervisor_status(self.client, status)
        self.written_id = status.id
        return now + self.interval

    def remove(self) -> None:
        if self.written_id is not None:
            remove_supervisor_status(self.client, self.written_id)


def _on_redis_clock(status: SupervisorStatus, offset_ms: int) -> None:
    """Shift ``status``'s times (taken on this host's clock) onto Redis's: readers
    (``redflow supervisors``, the dashboard) compare them with Redis's clock, and a
    host's clock may be off (a host a minute ahead was "seen in 59.0s"). Offsets
    under a second are left alone (the round trip that measured it is noise)."""
    if abs(offset_ms) < 1000:
        return
    status.started_at += offset_ms
    status.updated_at += offset_ms
    for child in status.children:
        if child.run_started_at is not None:
            child.run_started_at += offset_ms


class ProcessSampler:
    """CPU percent and RSS of processes, sampled between calls (no threads)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int) -> tuple[int, float]:
        import psutil  # here: not before the first fork (docs/internals.md, "Start-up")

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


def supervisor_status(
    *,
    sid: str,
    app: str,
    started_ms: int,
    mode: str,
    leader: bool,
    queues: Sequence[str],
    procs: int,
    children: Sequence[Child],
    board: Board,
    restarts: Mapping[int, int],
    sampler: ProcessSampler,
) -> SupervisorStatus:
    """This supervisor and its children (read from their board entries), now."""
    now_ms = int(time.time() * 1000)
    rows = []
    for child in sorted(children, key=lambda c: (c.slot, c.pid)):
        entry = board.read(child.index)
        rss, cpu = sampler.sample(child.pid)
        current = entry.current
        rows.append(
            ChildStatus(
                slot=child.slot,
                pid=child.pid,
                state="stopping" if child.stop_sent is not None else entry.state.name.lower(),
                run_id=current.run_id if current else None,
                workflow=current.workflow if current else None,
                run_started_at=(
                    now_ms - int((time.monotonic() - current.started) * 1000) if current else None
                ),
                rss=rss,
                cpu_percent=cpu,
                runs_done=entry.runs_done,
                restarts=restarts.get(child.slot, 0),
            )
        )
    sampler.forget({c.pid for c in children})
    own_rss, _ = sampler.sample(os.getpid())
    return SupervisorStatus(
        id=sid,
        app=app,
        host=sid.rsplit(":", 1)[0],
        pid=os.getpid(),
        started_at=started_ms,
        updated_at=now_ms,
        mode=mode,
        leader=leader,
        queues=list(queues),
        procs=procs,
        rss=own_rss,
        version=__version__,
        children=rows,
    )


def gauges(
    client: Client | None,
    registry: Registry,
    children_alive: int,
    queues: Sequence[str],
    remembered: RunQueues | None = None,
) -> list[tuple[str, Labels, float]]:
    """Gauges read at scrape time: children alive, the depths of the ``queues``
    this supervisor serves (not of every known queue: their names are the
    callers' and may be many), how many queues are known, suspended runs and
    each workflow's running runs. This runs in the arbiter's loop, so the counts
    are read by :func:`~redflow_mp.depths.read_depths`: per shard one round trip
    of one script call per thousand keys (15 for 5,000 queues and 5,000
    workflows, not 25,005 commands), exact at every scrape. ``remembered``: the
    queues of the running runs seen at earlier scrapes (kept by the arbiter), so
    that a scrape reads only the new ones' (not one HGET per running run)."""
    out: list[tuple[str, Labels, float]] = [("redflow_children_alive", (), float(children_alive))]
    if client is None:
        return out
    try:
        depths = read_depths(client, queues, [wf.name for wf in registry], remembered)
    except TRANSIENT_ERRORS as exc:
        log.debug("metrics gauges unavailable: %s", exc)
        return out
    except redis.ResponseError as exc:  # e.g. a script refused (ACL): not the loop's end
        log.debug("metrics gauges unavailable: %s", exc)
        return out
    if depths.queues_known is not None:
        out.append(("redflow_queues_known", (), float(depths.queues_known)))
    for q in sorted(depths.queues.values(), key=lambda q: q.name):
        for state, value in (
            ("ready", q.ready),
            ("processing", q.processing),
            ("scheduled", q.scheduled),
        ):
            out.append(("redflow_queue_depth", (("queue", q.name), ("state", state)), float(value)))
    if depths.suspended is not None:
        out.append(("redflow_runs_suspended", (), float(depths.suspended)))
    for name, count in depths.running.items():
        out.append(("redflow_workflow_running", (("workflow", name),), float(count)))
    return out
