"""A paged pass over a shard's ``runs:status:running``, shared by the views that
count running runs per queue (``/metrics``: :mod:`redflow_mp.depths`; the
dashboard's Queues page and ``redflow queues``: :mod:`redflow_mp.admin`).

Its own module so that both build on it without importing each other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RUNNING_PAGE", "RunningSweep"]

#: Ids of ``runs:status:running`` one call reads at most (about 0.6 ms of Redis).
RUNNING_PAGE = 10_000


class RunningSweep:
    """A paged pass over one shard's ``runs:status:running`` (ZSET id -> time it
    started running), kept between calls by the caller's
    :class:`~redflow_mp.admin.RunQueues`: where the pass is (a score, and an
    offset past it when a whole page had that score), the ids it counted, the
    running runs per queue counted so far, and those of the last whole pass.

    A page is read without its scores (``ZRANGEBYSCORE ... LIMIT``: with them,
    a page cost six times the ids alone), with the score of its last id alone
    (the same read, one id further on); the next page starts at that score
    (inclusive: the ids of that millisecond it read already are not counted
    twice; past a page of one millisecond, an offset into them, which runs that
    stop running meanwhile shift: that pass may miss as many). A pass reads up
    to the highest score of the index when it began (read with its first page):
    a run that starts running during a pass is left to the next one. Read to
    ``+inf``, a pass chased the runs starting: with a page of starts between two
    calls it never ended, its counts grew at every call (30,000 shown with
    25,000 running, and on) and the ids it met with them. One that stops running
    after the pass counted it is still counted until the next pass ends."""

    def __init__(self) -> None:
        self.score = "-inf"
        self.skip = 0
        self.counts: dict[str, int] = {}
        self.met: set[str] = set()
        self.done: dict[str, int] | None = None
        self.end = "+inf"  # the highest score when the pass began

    def read(self, pipe: Any, key: str) -> int:
        """Queue the page's reads on ``pipe`` (two; three when a pass begins:
        the index's highest score too); returns how many."""
        pipe.zrangebyscore(key, self.score, self.end, self.skip, RUNNING_PAGE)
        pipe.zrangebyscore(key, self.score, self.end, self.skip + RUNNING_PAGE - 1, 1, True)
        if self.score == "-inf" and self.skip == 0:
            pipe.zrevrangebyscore(key, "+inf", "-inf", 0, 1, True)
            return 3
        return 2

    def add(
        self, ids: list[str], tail: Any, seen: dict[str, str], top: Any = None
    ) -> dict[str, int]:
        """Count a page (``tail``: its last id with its score; ``seen`` holding the
        queues of its ids; ``top``: the index's highest id and score, read when
        the pass began); returns the running runs per queue to show now."""
        if top:
            self.end = repr(float(top[0][1]))
        for run_id in ids:
            if run_id in self.met:
                continue  # (an id of the millisecond the page before ended in)
            self.met.add(run_id)
            queue = seen.get(run_id)
            if queue is not None:
                self.counts[queue] = self.counts.get(queue, 0) + 1
        if len(ids) >= RUNNING_PAGE and tail:  # more to read: the next page from here
            score = repr(float(tail[0][1]))
            self.skip = self.skip + RUNNING_PAGE if score == self.score else 0
            self.score = score
            return self.counts if self.done is None else self.done
        # the pass is whole: shown until the next one is; runs no longer met forgotten
        self.done, self.counts = self.counts, {}
        for run_id in [x for x in seen if x not in self.met]:
            del seen[run_id]
        self.met, self.score, self.skip, self.end = set(), "-inf", 0, "+inf"
        return self.done
