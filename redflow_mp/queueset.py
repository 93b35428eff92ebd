"""A worker's queue list, registered once in Redis for its claims (claim_run.lua).

Past :data:`MANY_QUEUES` queues a claim does not send every queue name: it
names its list by a digest (``qset:<digest>``, a ZSET queue -> position in the
list, written by the claim that registers it), and Redis intersects that list
with ``ready-queues`` (the queues whose ready set may hold runs, kept by every
script that places a run in a ready set). A claim then costs in the queues
holding runs, not in the queues served: 5,000 queues served, a few of them
holding runs, cost a few reads. The order is unchanged: every candidate's head
is compared, ties go to the queue at position ``turn`` and the ones after it.

A claim that finds the registered list gone (it lives a day; deleted by hand, or
of another type) replies ``register``: the call is sent again with the names and
the digest (one more call; the finish it carried was applied). A *scan* reads
every queue's head, as claims did before, and lists the non-empty ones in
``ready-queues`` again: the first claim of a list, every :data:`SCAN_EVERY`
seconds, and when the caller asks (the claim of an idle worker that no bell
woke: the safety net). So a ``ready-queues`` damaged or deleted by hand
strands no run: at worst its runs wait for the next scan.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from .ids import new_token

__all__ = ["MANY_QUEUES", "SCAN_CHUNK", "SCAN_EVERY", "QueueLists", "digest"]

#: Past this many queues, claims name a registered list (fewer: the names, in ARGV).
MANY_QUEUES = 32

#: Past this many queues, a list is scanned and registered in calls of this many
#: queues each (scan_queues.lua), not by the claim.
SCAN_CHUNK = 512

#: Longest time (s) between two scans of a registered list by one claimer.
SCAN_EVERY = 30.0


def digest(queues: tuple[str, ...]) -> str:
    """The name of a queue list (its order included): a hash of the names, each
    length-prefixed (no two lists share one)."""
    h = hashlib.sha1(usedforsecurity=False)
    for q in queues:
        b = q.encode("utf-8", "surrogateescape")
        h.update(b"%d:" % len(b))
        h.update(b)
    return h.hexdigest()


class QueueLists:
    """The queue arguments of one claimer's claims to one server (or shard): the
    digest of the last list claimed from (found by identity: a worker passes the
    same tuple each time) and the time of its last scan. Safe to share between
    threads (one attribute read or written at a time: at worst a digest is
    computed twice or a scan made twice)."""

    __slots__ = ("_last", "_scanned")

    def __init__(self) -> None:
        self._last: tuple[tuple[str, ...], str] = ((), "")
        self._scanned = float("-inf")

    def name_of(self, queues: tuple[str, ...]) -> str:
        last = self._last
        if last[0] is queues:
            return last[1]
        named = digest(queues)
        self._last = (queues, named)
        return named

    def args(self, queues: tuple[str, ...], turn: int, scan: bool) -> tuple[Any, ...]:
        """``claim_run``'s ARGV from 11 on: the names (up to MANY_QUEUES, the list
        rotated by ``turn``) or the registered list's digest."""
        n = len(queues)
        if n <= MANY_QUEUES:
            if turn % max(1, n):
                i = turn % n
                queues = queues[i:] + queues[:i]
            return (n, *queues)
        scan = self.scan_due(scan)
        return (-1, self.name_of(queues), n, turn % n, "1" if scan else "")

    def scan_due(self, scan: bool) -> bool:
        """Whether this claim scans: asked (``scan``), or SCAN_EVERY s since the last
        scan (then this one counts as the last)."""
        now = time.monotonic()
        if scan or now - self._scanned >= SCAN_EVERY:
            self._scanned = now
            return True
        return False

    def register(self, queues: tuple[str, ...], turn: int) -> tuple[Any, ...]:
        """The same for the call that registers the list (after a ``register`` reply)."""
        return (len(queues), *queues, self.name_of(queues), turn % len(queues))


#: How a claimer calls a script: ``run(name, keys, args, retry=...)`` (Scripts.run).
Run = Callable[..., Any]


def scan_list(run: Run, qset: str, tag: str) -> bool:
    """The scan of the registered list ``qset`` (its non-empty queues listed in
    ``ready-queues`` again), SCAN_CHUNK queues a call; False: there is no list
    (build it: :func:`build_list`)."""
    first = 0
    while True:
        got = int(run("scan_queues", (qset,), (tag, "scan", first, SCAN_CHUNK), retry=True))
        if got < 0:
            return False
        if got < SCAN_CHUNK:
            return True
        first += got


def build_list(run: Run, qset: str, tag: str, queues: tuple[str, ...]) -> None:
    """Register ``queues`` as ``qset``, SCAN_CHUNK names a call under a key of this
    builder's own, renamed onto ``qset`` by the last call (the non-empty queues
    listed in ``ready-queues`` as it goes). A build whose key vanished half way
    (it expires a minute after its last chunk) starts again once; after that the
    next claim finds no list and builds it."""
    for _ in range(2):
        building = f"{qset}:b:{new_token()}"
        for first in range(0, len(queues), SCAN_CHUNK):
            edges = ("1" if first == 0 else "", "1" if first + SCAN_CHUNK >= len(queues) else "")
            chunk = queues[first : first + SCAN_CHUNK]
            args = (tag, "build", *edges, first, *chunk)
            if int(run("scan_queues", (qset, building), args, retry=True)) < 0:
                break
        else:
            return
