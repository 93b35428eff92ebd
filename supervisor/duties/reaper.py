"""Requeue runs whose lease expired (their worker, or a whole supervisor, is
gone or cut off) and release parked runs when their workflow has free slots.
One tick reads the expired leases batch after batch until a short batch (with
an upper bound), so however many runs are in flight every expired lease is
found within a tick; with several shards, each shard's ``leases`` in turn.
"""

from __future__ import annotations

from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.maintenance import StallGuard, announce_queues, reap_expired, stores

from ..exposition import MetricsStore

__all__ = ["ReaperDuty"]


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
        self.queues = queues
        self.interval = interval_ms / 1000.0
        self.metrics = metrics
        self.requeued = 0

    def tick(self, now: float) -> float:
        queues = self.queues()
        requeued: list[str] = []
        for index, store in enumerate(stores(self.client)):
            # Every shard lists the queues served: a queue's runs may be in any shard.
            announce_queues(store, queues)
            requeued.extend(reap_expired(store, guard=self.guard, index=index)[1])
        self.requeued += len(requeued)
        if requeued and self.metrics is not None:
            self.metrics.inc("redflow_leases_expired_total", float(len(requeued)))
        return now + self.interval
