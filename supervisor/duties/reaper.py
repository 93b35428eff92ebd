"""Requeue runs whose lease expired (their worker, or a whole supervisor, is
gone or cut off) and release parked runs when their workflow has free slots.
One tick reads the expired leases batch after batch until a short batch (with
an upper bound), so however many runs are in flight every expired lease is
found within a tick.
"""

from __future__ import annotations

from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.maintenance import announce_queues, reap_expired

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
    ) -> None:
        self.client = client
        self.queues = queues
        self.interval = interval_ms / 1000.0
        self.metrics = metrics
        self.requeued = 0

    def tick(self, now: float) -> float:
        announce_queues(self.client, self.queues())
        _, requeued = reap_expired(self.client)
        self.requeued += len(requeued)
        if requeued and self.metrics is not None:
            self.metrics.inc("redflow_leases_expired_total", float(len(requeued)))
        return now + self.interval
