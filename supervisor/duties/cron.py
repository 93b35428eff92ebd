"""Enqueue due cron runs while this supervisor leads. Fire times come from the
Redis clock; each fire time maps to one run through its deterministic
idempotency key, so a leader change cannot fire a time twice. With several
shards the leader fires the due crons of every shard (a cron definition lives in
its workflow's shard) with that shard's scripts, fenced by that shard's copy of
the lock (:class:`~redflow_mp.maintenance.LeaderLock`). An entry this host
cannot read (a timezone its tzdata lacks, a newer croniter's syntax) stays
where it is for a leader that can, named in an ERROR line once a minute.
"""

from __future__ import annotations

import logging

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import CronTick, UnreadableCrons, cron_tick, run_id_maker, stores

from ..exposition import MetricsStore
from .leader import LeaderDuty

__all__ = ["CronDuty"]

log = logging.getLogger(__name__)


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

    def _tick_shards(self, result: CronTick) -> list[Exception]:
        """Fire the due crons of every shard whose lock copy this leader holds,
        adding up into ``result``; the errors of the shards that failed (one
        shard down: the next ones still fire)."""
        errors: list[Exception] = []
        for i, store in enumerate(stores(self.client)):
            if not self.leader.holds(i):
                continue  # a new leader waits for the old one's copy to expire
            try:
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

    def tick(self, now: float) -> float:
        if not self.leader.is_leader or not self.leader.enabled:
            return now + self.max_wait
        result = CronTick(next_due_ms=None)
        errors = self._tick_shards(result)
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
        if result.more:
            # A full batch: more entries are due now. Waiting for the earliest
            # later fire time (or max_wait) would fire 100 entries a second at
            # most, and many crons due at once would fall behind for good.
            return now
        if result.next_due_ms is None:
            return now + self.max_wait
        wait = (result.next_due_ms - result.now_ms) / 1000.0
        return now + min(self.max_wait, max(0.005, wait))
