"""Requeue runs whose lease expired (their worker, or a whole supervisor, is
gone or cut off) and release parked runs when their workflow has free slots.
One tick reads the expired leases batch after batch until a short batch (with
an upper bound), so however many runs are in flight every expired lease is
found within a tick; with several shards, each shard's ``leases`` in turn.

It also lists the queues this supervisor serves in ``queues`` (for ``redflow
queues`` and the metrics, before anything is enqueued on them): when they
change and every :data:`ANNOUNCE_EVERY` seconds (a FLUSHALL lost them), not
every tick: an SADD of 1,000 names every half second was the largest cost of a
supervisor at rest. At the same times it gives a page of running runs whose
``leases`` entry Redis lost (the key evicted or deleted) an entry again
(:func:`~redflow_mp.lostkeys.rearm_leases`): without one the reaper never saw
them and they stayed running for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.lostkeys import rearm_leases
from redflow_mp.maintenance import StallGuard, announce_queues, reap_expired, stores

from ..exposition import MetricsStore

__all__ = ["ANNOUNCE_EVERY", "ReaperDuty"]

log = logging.getLogger("redflow_supervisor")

#: How often the served queues are listed again when they did not change (s).
ANNOUNCE_EVERY = 60.0


class ReaperDuty:
    name = "reaper"

    def __init__(
        self,
        client: Client,
        interval_ms: int,
        metrics: MetricsStore | None = None,
        queues: Callable[[], tuple[str, ...]] = tuple,
        lease_ms: int = 5000,
    ) -> None:
        self.client = client
        # After Redis was out of reach (a stall, restart or cut), hold off a
        # lease so that live workers renew before anything is taken back.
        self.guard = StallGuard(lease_ms, interval_ms)
        self.lease_ms = lease_ms
        self._running_at: dict[int, int] = {}  # per shard: the next page's rank
        self.queues = queues
        self.interval = interval_ms / 1000.0
        self.metrics = metrics
        self.requeued = 0
        # what was listed, and when (monotonic s): (queues, at)
        self._announced: tuple[tuple[str, ...], float] | None = None

    def _rearm(self, index: int, store: Any) -> None:
        """A page of running runs whose ``leases`` entry Redis lost gets one again."""
        self._running_at[index], ids = rearm_leases(
            store, self._running_at.get(index, 0), self.lease_ms
        )
        if ids:
            log.warning(
                "%d running runs had no entry in %s (Redis lost it: evicted under "
                "maxmemory, or deleted): gave them a lease again, which their worker "
                "renews or the reaper takes back (%s)",
                len(ids),
                store.keys.leases,
                ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
            )

    def tick(self, now: float) -> float:
        queues = self.queues()
        announce = (
            self._announced is None
            or self._announced[0] != queues
            or now - self._announced[1] >= ANNOUNCE_EVERY
        )
        requeued: list[str] = []
        errors: list[Exception] = []
        for index, store in enumerate(stores(self.client)):
            try:
                if announce:
                    # Every shard lists the queues served: a queue's runs may be in any shard.
                    announce_queues(store, queues)
                    self._rearm(index, store)
                requeued.extend(reap_expired(store, guard=self.guard, index=index)[1])
            except TRANSIENT_ERRORS as exc:  # one shard down: the next ones still reaped
                errors.append(exc)
        if announce and not errors:
            self._announced = (queues, now)
        self.requeued += len(requeued)
        if requeued and self.metrics is not None:
            self.metrics.inc("redflow_leases_expired_total", float(len(requeued)))
        if errors:  # reported (the duty's warning); the shards that answered are done
            raise errors[0]
        return now + self.interval
