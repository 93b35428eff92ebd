"""Children that make no progress: stopped (SIGSTOP, a debugger, the cgroup
freezer) or otherwise frozen while the parent believes them healthy.

Such a child keeps its run for good (the lease backstop renews the leases of
every live child, as it must for a handler in C code, and a run has no timeout
by default), and an idle one is never replaced: capacity shrinks, unseen. An
idle child legitimately blocks in BLPOP and a busy one may hold the GIL in C
code for minutes, so neither its claims nor its lease heartbeat tell. What a
stopped process cannot fake is used instead: a thread of each child beats on
the board once a second (``childlife.orphan_watch``), which needs the process to
be scheduled, and a child whose beats stopped is asked the kernel for its CPU
time, which a handler holding the GIL in C code advances and a stopped process
does not. A child with neither for :data:`STALL_LEASES` leases (at least
:data:`STALL_FLOOR` seconds: a loaded machine may leave a process unscheduled
for a few seconds, and the beats come once a second), counted while the parent
itself runs (a parent stopped with its children, by a SIGSTOP of the group or a
frozen cgroup, may run again a second before they do: the time it did not run is
no child's silence, :data:`BLIND_GAP`), is killed
(SIGKILL ends a stopped process too), its run put back by the recovery of a
dead child and charged a crash (a handler that stops its own process is a
poison pill, ``max_run_crashes``), and the slot gets a new child.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

from .board import Board
from .children import Child

__all__ = ["BLIND_GAP", "STALL_FLOOR", "STALL_LEASES", "StallWatch", "cpu_seconds"]

log = logging.getLogger("redflow_supervisor")

#: Leases without a beat or CPU time after which a child is taken for stopped.
STALL_LEASES = 3
#: The least time without progress after which a child is killed (s).
STALL_FLOOR = 10.0
# Beats come each second: the CPU time is asked only past this much silence.
_QUIET = 2.5
#: The parent looks each second (each turn of its loop): a longer gap between two
#: of its looks means it did not run itself (stopped with its children by a SIGSTOP
#: of the group or a frozen cgroup, unscheduled), and a child's silence then is not
#: known. Past this gap a child's silence is counted again from the look.
BLIND_GAP = STALL_FLOOR / 2


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (None: it is gone)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


class StallWatch:
    """Kills the children of one arbiter that make no progress."""

    def __init__(self, board: Board, lease_ms: int, count: Callable[[str], None]) -> None:
        self.board = board
        self.bound = max(STALL_FLOOR, STALL_LEASES * lease_ms / 1000.0)
        self.count = count  # the arbiter's counter of a metric

    def check(self, child: Child, now: float) -> None:
        """Look at ``child`` (each turn of the arbiter's loop, at least once a second)."""
        if child.stop_sent == "kill":
            return
        blind = now - child.looked_at > BLIND_GAP
        child.looked_at = now
        beats = self.board.beats(child.index)
        if beats != child.beats or not child.progress_at or blind:
            child.beats, child.progress_at, child.cpu = beats, now, None
            return
        if now - child.progress_at < _QUIET:
            return
        cpu = cpu_seconds(child.pid)
        if cpu is None:
            return  # gone: reaped next
        if child.cpu is None or cpu != child.cpu:
            if child.cpu is not None:  # it ran (C code holding the GIL): progress
                child.progress_at = now
            child.cpu = cpu
            return
        if now - child.progress_at < self.bound:
            return
        held = self.board.read(child.index).held
        log.error(
            "worker %d (pid %d) made no progress for %.0f s (no beat, no CPU time: stopped "
            "by SIGSTOP, a debugger or a frozen cgroup?); killing it%s",
            child.slot,
            child.pid,
            now - child.progress_at,
            f"; run {held[-1].run_id} goes back to its queue" if held else "",
        )
        child.stop_sent = "kill"
        child.stalled = True
        child.kill_at = None
        child.signal(signal.SIGKILL)
        self.count("redflow_child_stalls_total")
