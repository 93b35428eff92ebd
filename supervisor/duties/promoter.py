"""Move due delayed runs and retries from ``scheduled`` to ``ready``, and wake the
suspended runs whose wake-up time came (durable sleeps, wait deadlines)."""

from __future__ import annotations

from redflow_mp.client import Client
from redflow_mp.maintenance import promote_due, wake_due

__all__ = ["PromoterDuty"]


class PromoterDuty:
    name = "promoter"

    def __init__(self, client: Client, interval_ms: int) -> None:
        self.client = client
        self.interval = interval_ms / 1000.0

    def tick(self, now: float) -> float:
        promote_due(self.client)
        wake_due(self.client)
        return now + self.interval
