"""The cron leader lock: acquired with SET NX PX, renewed every ttl/3 with a
fenced script, released on shutdown so another supervisor takes over at once.
Only the holder schedules cron; the reaper and promoter run everywhere (they
are idempotent).
"""

from __future__ import annotations

from redflow_mp.client import Client
from redflow_mp.maintenance import LeaderLock

__all__ = ["LeaderDuty"]


class LeaderDuty:
    name = "leader"

    def __init__(self, client: Client, ttl_ms: int) -> None:
        self.lock = LeaderLock(client, ttl_ms)
        self.interval = ttl_ms / 3000.0
        self.enabled = True

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    def holds(self, shard: int) -> bool:
        """Whether this supervisor may fire the crons of shard ``shard`` now."""
        return self.enabled and self.lock.holds(shard)

    @property
    def token(self) -> str:
        return self.lock.token

    def tick(self, now: float) -> float:
        if self.enabled:
            self.lock.tick()
        return now + self.interval

    def resign(self) -> None:
        """Stop competing and hand the lock back (drain, shutdown)."""
        self.enabled = False
        self.lock.release()
