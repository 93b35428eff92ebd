"""Remove finished runs older than ``run_retention`` (0 keeps them), in bounded
batches (each one script call of ~10 ms); runs again soon while there is a
backlog, faster than a supervisor finishes runs. Also forgets idle queue
names: each tick hands one page of the ``queues`` set to
:func:`~redflow_mp.maintenance.forget_idle_queues`, with the queues that live
supervisors (this one included) serve, which are never forgotten, and names in
a WARNING (every 10 minutes at most) a queue that holds runs no live supervisor
serves. And repairs, a page of suspended runs a tick, what a key Redis lost
(evicted or deleted) would leave asleep for good: it wakes the parents waiting
for a child run whose record is gone and puts back the wake-up times missing
from ``timers`` (:mod:`redflow_mp.lostkeys`). With several shards all three
are done in every shard (each bounded as with one).

Only the cron leader does either (``leader``): the work is the same whoever does
it, and every supervisor doing it multiplied the Redis time it takes. While a
backlog lasts one sweeper takes a third to a half of Redis's time; ten
supervisors each sweeping at that pace held Redis busy all along (measured with
a million old runs, benchmarks/maintenance_scale.py). During a rolling change of
``run_retention`` the leader's value applies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.lostkeys import repair_suspended
from redflow_mp.maintenance import forget_idle_queues, stores, sweep_backlog

from ..status import list_supervisors
from .leader import LeaderDuty
from .shards import ServerStalls

__all__ = ["RetentionDuty"]

log = logging.getLogger(__name__)

FORGET_PAGE = 200
#: Runs removed per script call: ~2.5 ms of Redis time each (~24 us a run, at a
#: million runs as with none). 500 a call blocked Redis for 12 ms on average and
#: up to 50 ms (benchmarks/maintenance_scale.py), in front of every claim.
SWEEP_BATCH = 100
#: Calls per tick (per shard): 2,000 runs, as with 4 calls of 500.
SWEEP_BATCHES = 20
#: The pause after a tick while a backlog lasts (the tick's last call left work),
#: counted from the tick's end so that the parent's loop and Redis get it
#: however long the tick took (from its start, a tick longer than the pause was
#: due again at once). A tick of 2,000 runs takes ~50 ms on a quiet machine:
#: ~20,000 runs/s per shard, above what one supervisor finishes (W1 drain,
#: docs/benchmarks.md: ~8,000 no-op runs/s) with the backlog of a 30 s
#: interval. At 0.5 s between ticks it was 4,000 runs/s: a supervisor finishing
#: more than that fell behind for good.
BACKLOG_PAUSE = 0.05
#: Seconds of sweep calls a tick makes at most (each shard gets one call at
#: least): the parent's loop is never held longer than this and one call. 20
#: calls took up to 470 ms on a loaded machine (130 ms median).
TICK_BUDGET = 0.1
#: Seconds between two warnings about one stranded queue.
STRANDED_EVERY = 600.0


class RetentionDuty:
    name = "retention"

    def __init__(
        self,
        client: Client,
        retention_s: float,
        leader: LeaderDuty | None = None,
        interval: float | None = None,
        queues: Callable[[], tuple[str, ...]] = tuple,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.clock = clock  # what a tick's own time is read on (TICK_BUDGET, the pause)
        # Sweep only while this supervisor leads (None: always, a lone caller).
        self.leader = leader
        self.retention_ms = int(retention_s * 1000)
        self.queues = queues
        # A run goes at most a tenth of its retention late (at most 30 s): days of
        # retention sweep every 30 s, a short test retention every 0.2-1 s. A
        # sweep with nothing due is one cheap range read. Without retention the
        # tick only forgets idle queues, every 30 s.
        if interval is None:
            interval = min(30.0, max(0.2, retention_s / 10)) if retention_s > 0 else 30.0
        self.interval = interval
        self.removed = 0
        self.forgotten = 0
        self._cursors = [0] * len(stores(client))
        self._first = -1  # the shard the last tick swept first
        self._suspended_at = [0] * len(stores(client))  # per shard: the next page's rank
        # per shard: (child, parent in another shard) pairs found decided, for its
        # next sweep call to remove (maintenance.sweep_backlog)
        self._released: list[list[tuple[str, str]]] = [[] for _ in stores(client)]
        self._forget_at = 0.0
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)
        self.warned: dict[str, float] = {}  # stranded queue -> when it may be named again

    def tick(self, now: float) -> float:
        if self.leader is not None and not self.leader.is_leader:
            return now + min(self.interval, 1.0)  # a new leader starts within a second
        started = self.clock()
        backlog = False
        errors: list[Exception] = []
        self.stalls.clear()
        if self.retention_ms > 0:
            shards = stores(self.client)
            # Each tick starts at the next shard: past TICK_BUDGET the later ones
            # get a single call, so a fixed order left them one call a tick.
            self._first = (self._first + 1) % len(shards)
            order = list(range(self._first, len(shards))) + list(range(self._first))
            for i in order:  # each one's runs
                try:
                    with self.stalls.call(shards[i]):  # its server stalled: not called
                        swept, more = sweep_backlog(
                            shards[i],
                            self.retention_ms,
                            batch=SWEEP_BATCH,
                            max_batches=SWEEP_BATCHES,
                            deadline=started + TICK_BUDGET,
                            clock=self.clock,
                            # a parent in another shard is read there (sweep_runs.lua)
                            shards=shards,
                            released=self._released[i],
                        )
                except TRANSIENT_ERRORS as exc:  # one shard down: the next ones still swept
                    errors.append(exc)
                    continue
                # work left after a tick's calls (runs removed, or kept children of
                # unfinished parents read): the next tick comes soon, not in 30 s
                backlog = backlog or more
                self.removed += swept
        # A page of queue names per tick, at most every 0.5 s while a backlog
        # makes the ticks come fast (each also reads every supervisor's status).
        if not backlog or now >= self._forget_at:
            self._forget(now)
            self._forget_at = now + 0.5
            self._lost_children()
        if errors:  # reported (the duty's warning); the shards that answered are swept
            raise errors[0]
        if backlog:
            # The pause follows the tick's calls: counted from its start, a tick
            # longer than the pause (130 ms on a loaded machine) was due again at
            # once and the parent's loop sat in the sweep for the whole backlog.
            return now + (self.clock() - started) + BACKLOG_PAUSE
        return now + self.interval

    def _stranded(self, stranded: dict[str, int], now: float) -> None:
        """Name the queues holding runs that no live supervisor serves (a deploy
        moved a workflow to another queue, a --queues list or an enqueue's queue
        misspelt): their runs wait until something serves them, silently."""
        for q, n in stranded.items():
            if now < self.warned.get(q, -STRANDED_EVERY):
                continue
            self.warned[q] = now + STRANDED_EVERY
            log.warning(
                "queue %r holds %d runs (ready or scheduled) that no live supervisor "
                "serves: they wait until one serves it (a workflow moved to another "
                "queue, a --queues list or a queue name misspelt?)",
                q,
                n,
            )

    def _lost_children(self) -> None:
        """Wake the parents, in a page of each shard's suspended runs, that wait for
        a child whose record Redis lost, and re-arm the timers it lost."""
        for i, store in enumerate(stores(self.client)):
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    self._suspended_at[i], woken, rearmed = repair_suspended(
                        self.client, store, self._suspended_at[i]
                    )
            except TRANSIENT_ERRORS:  # that shard down: its page waits for the next tick
                continue
            for parent, child in woken:
                log.warning(
                    "run %s waited for %s, which is gone from Redis (evicted under "
                    "maxmemory, or deleted), or its wake-up was; woke it (its wait fails "
                    "if a child no longer exists)",
                    parent,
                    f"child run {child}" if child else "its children",
                )
            if rearmed:
                log.warning(
                    "%d suspended runs had no wake-up time in %s (Redis lost it: evicted "
                    "under maxmemory, or deleted); put it back (%s)",
                    len(rearmed),
                    store.keys.timers,
                    ", ".join(rearmed[:10]) + (" ..." if len(rearmed) > 10 else ""),
                )

    def _forget(self, now: float) -> None:
        served = set(self.queues())
        with self.stalls.call(self.client):  # its server stalled this tick: raised
            for status in list_supervisors(self.client):
                served.update(status.queues)
        gone: list[str] = []
        for i, store in enumerate(stores(self.client)):
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    self._cursors[i], dropped, stranded = forget_idle_queues(
                        store, sorted(served), self._cursors[i], FORGET_PAGE
                    )
            except TRANSIENT_ERRORS:  # that shard down: its page waits for the next tick
                continue
            gone.extend(dropped)
            self._stranded(stranded, now)
        self.forgotten += len(gone)
        if gone:
            log.debug("forgot %d idle queue names: %s", len(gone), ", ".join(gone[:10]))
