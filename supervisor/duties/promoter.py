"""Move due delayed runs and retries from ``scheduled`` to ``ready``, and wake the
suspended runs whose wake-up time came (durable sleeps, wait deadlines), in
every shard: a
sleeping run wakes at most one ``promoter_interval_ms`` late (plus the batch
work). The lateness of each wake-up is observed in
``redflow_wakeup_lateness_seconds``."""

from __future__ import annotations

from redflow_mp.client import Client
from redflow_mp.maintenance import promote_due, stores, wake_due
from redflow_mp.metrics import Metrics

from ..exposition import MetricsStore

__all__ = ["PromoterDuty"]


class PromoterDuty:
    name = "promoter"

    def __init__(
        self, client: Client, interval_ms: int, metrics: MetricsStore | None = None
    ) -> None:
        self.client = client
        self.interval = interval_ms / 1000.0
        self.metrics = metrics

    def tick(self, now: float) -> float:
        late: list[int] = []
        for store in stores(self.client):  # bounded per shard (maintenance.py)
            promote_due(store)
            late.extend(wake_due(store)[0])
        if late and self.metrics is not None:
            observed = Metrics()
            for ms in late:
                observed.observe("redflow_wakeup_lateness_seconds", max(0, ms) / 1000.0)
            self.metrics.merge(observed.drain())
        return now + self.interval
