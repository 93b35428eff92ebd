"""The cron leader lock: acquired with SET NX PX, renewed every ttl/3 with a
fenced script, released on shutdown so another supervisor takes over at once.
Only the holder schedules cron; the reaper and promoter run everywhere (they
are idempotent).
"""

from __future__ import annotations

import logging

from redflow_mp.client import Client
from redflow_mp.maintenance import LeaderLock, stores

from .shards import ServerStalls

__all__ = ["LeaderDuty"]

log = logging.getLogger("redflow_supervisor")

#: Seconds between two looks (and ERROR lines) at a lock key no leader can hold.
FOREIGN_CHECK_S = 60.0


class LeaderDuty:
    name = "leader"

    def __init__(self, client: Client, ttl_ms: int) -> None:
        self.lock = LeaderLock(client, ttl_ms)
        self.interval = ttl_ms / 3000.0
        self.enabled = True
        self._next_foreign_check = 0.0
        self._client = client
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)

    @property
    def is_leader(self) -> bool:
        """Leading now: not after :meth:`resign`, even when the release failed
        (Redis out of reach at a drain's start: the lock lapses by its TTL)."""
        return self.enabled and self.lock.held

    def holds(self, shard: int) -> bool:
        """Whether this supervisor may fire the crons of shard ``shard`` now."""
        return self.enabled and self.lock.holds(shard)

    @property
    def token(self) -> str:
        return self.lock.token

    def tick(self, now: float) -> float:
        if self.enabled:
            was = self.lock.held
            self.stalls.clear()
            shards = stores(self._client)
            # each copy's server: a stalled one is called once a tick, not once a shard
            self.lock.tick(guard=lambda i: self.stalls.call(shards[i]))
            # a lead just lost looks at once: the key may have been overwritten
            # with a value no leader can hold (LeaderLock.tick)
            if now >= self._next_foreign_check or (was and not self.lock.held):
                self._name_foreign_keys(now)
        return now + self.interval

    def _name_foreign_keys(self, now: float) -> None:
        """Name, in an ERROR line a minute, each lock key that no leader can hold
        (another program's, or typed by hand): every supervisor stays out of the
        lead and no cron fires until it is removed, which would otherwise show
        nowhere."""
        found = self.lock.foreign_keys()
        self._next_foreign_check = now + FOREIGN_CHECK_S
        for key, held in found:
            log.error(
                "cron leader lock %s holds %s, which no supervisor sets (written by hand or "
                "by another program?): no supervisor can lead, so no cron fires; delete it",
                key,
                held,
            )

    def resign(self) -> None:
        """Stop competing and hand the lock back (drain, shutdown)."""
        self.enabled = False
        self.lock.release()
