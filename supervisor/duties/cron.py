"""Enqueue due cron runs while this supervisor leads. Fire times come from the
Redis clock; each fire time maps to one run through its deterministic
idempotency key, so a leader change cannot fire a time twice. With several
shards the leader fires the due crons of every shard (a cron definition lives in
its workflow's shard) with that shard's scripts, fenced by that shard's copy of
the lock (:class:`~redflow_mp.maintenance.LeaderLock`). An entry this host
cannot read (a timezone its tzdata lacks, a newer croniter's syntax) stays
where it is for a leader that can, named in an ERROR line once a minute.

When it becomes the leader, and when the Redis clock ran back against this
process's monotonic clock, it walks the cron entries a page a tick and moves
back those scheduled from a clock that was ahead
(:func:`redflow_mp.cronclock.rewind_page`): they waited, firing nothing, for as
long as the clock had been ahead.
"""

from __future__ import annotations

import logging

import redis

from redflow_mp.client import Client
from redflow_mp.cronclock import rewind_page
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import CronTick, UnreadableCrons, cron_tick, run_id_maker, stores

from ..exposition import MetricsStore
from .leader import LeaderDuty
from .shards import ServerStalls

__all__ = ["CronDuty"]

log = logging.getLogger(__name__)

#: The Redis clock ran back by more than this (ms) between two ticks, measured
#: against this process's monotonic clock: the cron entries are looked at again.
CLOCK_BACK_MS = 2_000


class CronDuty:
    name = "cron"

    def __init__(
        self,
        client: Client,
        leader: LeaderDuty,
        max_wait: float = 1.0,
        metrics: MetricsStore | None = None,
    ) -> None:
        self.client = client
        self.leader = leader
        self.max_wait = max_wait
        self.metrics = metrics
        self.fired = 0
        self.skipped = 0
        self.unreadable = UnreadableCrons()
        self.rewound = 0
        self._led = False
        #: per shard, the offset of the rewind pass in progress (none: no pass)
        self._rewind: dict[int, int] = {}
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)
        #: (server ms, monotonic s) of the last tick that read the server's time
        self._seen: tuple[int, float] | None = None

    def _tick_shards(self, result: CronTick) -> list[Exception]:
        """Fire the due crons of every shard whose lock copy this leader holds,
        adding up into ``result``; the errors of the shards that failed (one
        shard down: the next ones still fire)."""
        errors: list[Exception] = []
        for i, store in enumerate(stores(self.client)):
            if not self.leader.holds(i):
                continue  # a new leader waits for the old one's copy to expire
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    part = cron_tick(store, self.leader.token, make_id=run_id_maker(self.client, i))
            except TRANSIENT_ERRORS as exc:
                errors.append(exc)
                continue
            result.fired += part.fired
            result.skipped += part.skipped
            result.unreadable += part.unreadable
            result.now_ms = part.now_ms
            result.more = result.more or part.more
            if part.next_due_ms is not None and (
                result.next_due_ms is None or part.next_due_ms < result.next_due_ms
            ):
                result.next_due_ms = part.next_due_ms
        return errors

    def _clock_went_back(self, server_ms: int, now: float) -> bool:
        """Whether the Redis clock ran back since the last tick by more than
        :data:`CLOCK_BACK_MS`, against the monotonic ``now``."""
        seen, self._seen = self._seen, (server_ms, now)
        if seen is None or not server_ms:
            return False
        ran = (now - seen[1]) * 1000.0
        return server_ms - seen[0] < ran - CLOCK_BACK_MS

    def _start_rewind(self, why: str) -> None:
        shards = len(stores(self.client))
        if not self._rewind:
            log.info("cron: looking at every cron entry's next fire time (%s)", why)
        self._rewind = dict.fromkeys(range(shards), 0)

    def _rewind_step(self) -> bool:
        """One page of the rewind pass of each shard this leader holds; whether
        any was done (False: Redis did not answer, the next tick tries again)."""
        went_on = False
        for i, store in enumerate(stores(self.client)):
            if i not in self._rewind:
                continue
            if not self.leader.holds(i):
                del self._rewind[i]
                continue
            try:
                with self.stalls.call(store):  # as in _tick_shards
                    got = rewind_page(store, self.leader.token, self._rewind[i])
            except TRANSIENT_ERRORS:
                continue  # this page again next tick
            except redis.ResponseError as exc:  # cron:next of another type
                log.error("cron: the cron entries of shard %d cannot be looked at: %s", i, exc)
                got = None
            if got is None:
                del self._rewind[i]
                continue
            offset, moved = got
            went_on = True
            for cron_id in moved:
                log.warning(
                    "cron %s: its next fire time was set from a Redis clock that was ahead; "
                    "moved back to its schedule's next fire time",
                    cron_id,
                )
            self.rewound += len(moved)
            if offset:
                self._rewind[i] = offset
            else:
                del self._rewind[i]
        return went_on

    def tick(self, now: float) -> float:
        if not self.leader.is_leader or not self.leader.enabled:
            self._led, self._seen, self._rewind = False, None, {}
            return now + self.max_wait
        if not self._led:
            self._led = True
            self._start_rewind("this supervisor became the cron leader")
        result = CronTick(next_due_ms=None)
        self.stalls.clear()
        errors = self._tick_shards(result)
        if self._clock_went_back(result.now_ms, now):
            self._start_rewind("the Redis clock went back")
        paging = bool(self._rewind) and self._rewind_step() and bool(self._rewind)
        self.fired += len(result.fired)
        self.skipped += len(result.skipped)
        if self.metrics is not None:
            if result.fired:
                self.metrics.inc("redflow_cron_fires_total", float(len(result.fired)))
            if result.skipped:
                self.metrics.inc("redflow_cron_skips_total", float(len(result.skipped)))
        self.unreadable.report(result.unreadable, now)
        for run_id in result.fired:
            log.info("cron fired run %s", run_id)
        if errors:  # reported (the duty's warning); the shards that answered fired
            raise errors[0]
        if result.more or paging:
            # A full batch: more entries are due now. Waiting for the earliest
            # later fire time (or max_wait) would fire 100 entries a second at
            # most, and many crons due at once would fall behind for good. (Or
            # a rewind pass goes on: its next page.)
            return now
        if result.next_due_ms is None:
            return now + self.max_wait
        wait = (result.next_due_ms - result.now_ms) / 1000.0
        return now + min(self.max_wait, max(0.005, wait))
