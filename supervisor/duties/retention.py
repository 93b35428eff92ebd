"""Remove finished runs older than ``run_retention`` (0 keeps them), in bounded
batches; runs again soon while there is a backlog."""

from __future__ import annotations

from redflow_mp.client import Client
from redflow_mp.maintenance import sweep_retention

__all__ = ["RetentionDuty"]


class RetentionDuty:
    name = "retention"

    def __init__(self, client: Client, retention_s: float, interval: float | None = None) -> None:
        self.client = client
        self.retention_ms = int(retention_s * 1000)
        # A run goes at most a tenth of its retention late (at most 30 s): days of
        # retention sweep every 30 s, a short test retention every 0.2-1 s. A
        # sweep with nothing due is one cheap range read.
        self.interval = interval if interval is not None else min(30.0, max(0.2, retention_s / 10))
        self.removed = 0

    def tick(self, now: float) -> float:
        if self.retention_ms <= 0:
            return now + 3600.0
        removed = sweep_retention(self.client, self.retention_ms, batch=500, max_batches=4)
        self.removed += removed
        return now + (0.5 if removed >= 2000 else self.interval)
