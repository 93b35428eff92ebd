"""Move due delayed runs and retries from ``scheduled`` to ``ready``, and wake the
suspended runs whose wake-up time came (durable sleeps, wait deadlines), in
every shard: a sleeping run wakes at most one ``promoter_interval_ms`` late
(plus the batch work: a tick that used all its calls is followed by another at
once). The lateness of each wake-up is observed in
``redflow_wakeup_lateness_seconds``."""

from __future__ import annotations

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import BATCH, MAX_CALLS, promote_due, stores, wake_due
from redflow_mp.metrics import Metrics

from ..exposition import MetricsStore
from .shards import ServerStalls

__all__ = ["PromoterDuty"]


class PromoterDuty:
    name = "promoter"

    def __init__(
        self,
        client: Client,
        interval_ms: int,
        metrics: MetricsStore | None = None,
        batch: int = BATCH,
        max_calls: int = MAX_CALLS,
    ) -> None:
        self.client = client
        self.interval = interval_ms / 1000.0
        self.metrics = metrics
        self.batch = batch
        self.max_calls = max_calls
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)

    def tick(self, now: float) -> float:
        late: list[int] = []
        full = False  # a tick used all its calls: more may be due now
        errors: list[Exception] = []
        self.stalls.clear()
        for store in stores(self.client):  # bounded per shard (maintenance.py)
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    promoted, _ = promote_due(store, self.batch, self.max_calls)
                    woken, _ = wake_due(store, self.batch, self.max_calls)
            except TRANSIENT_ERRORS as exc:  # one shard down: the next ones still due
                errors.append(exc)
                continue
            late.extend(woken)
            cap = self.batch * self.max_calls
            full = full or promoted >= cap or len(woken) >= cap
        if late and self.metrics is not None:
            observed = Metrics()
            for ms in late:
                observed.observe("redflow_wakeup_lateness_seconds", max(0, ms) / 1000.0)
            self.metrics.merge(observed.drain())
        if errors:  # reported (the duty's warning); the shards that answered are done
            raise errors[0]
        # With more due (100,000 timers at once), waiting an interval between full
        # ticks made the last wake-ups ten intervals late on top of the work.
        return now if full else now + self.interval
