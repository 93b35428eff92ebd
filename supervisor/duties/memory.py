"""``max_memory_per_child``: a child whose RSS passed the limit is asked (on the
board) to leave after its current run; the arbiter then starts a fresh one.
RSS is read with psutil, once a second, from the parent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..board import Board
from ..children import Child

__all__ = ["MemoryDuty"]

log = logging.getLogger("redflow_supervisor")


class MemoryDuty:
    name = "memory"

    def __init__(
        self, board: Board, children: Callable[[], Iterable[Child]], limit_mib: int
    ) -> None:
        self.board = board
        self.children = children
        self.limit_mib = limit_mib

    def tick(self, now: float) -> float:
        limit = self.limit_mib * 1024 * 1024
        if limit <= 0:
            return now + 1.0
        import psutil  # here: not before the first fork (docs/internals.md, "Start-up")

        for child in self.children():
            if child.recycle_requested or not child.ready:
                continue
            try:
                rss = psutil.Process(child.pid).memory_info().rss
            except psutil.Error:
                continue
            if rss > limit:
                child.recycle_requested = True
                self.board.request_recycle(child.index)
                log.info(
                    "worker %d (pid %d) uses %.0f MiB > max_memory_per_child %d MiB: "
                    "recycling it after its current run",
                    child.slot,
                    child.pid,
                    rss / 1048576,
                    self.limit_mib,
                )
        return now + 1.0
