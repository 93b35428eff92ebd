"""The maintenance a worker used without a supervisor does itself
(``Worker(maintenance=True)``): promote due runs, wake due waits, reap expired
leases.

Reaping goes through the same stall guard as a supervisor's reaper
(:class:`~redflow_mp.maintenance.StallGuard`): after a Redis stall, restart or
cut that kept every holder from renewing, nothing is reaped for a lease, time
for the live holders to renew. Without it a standalone worker put back, at the
end of a stall longer than a lease, the runs of workers that were alive: each
was executed twice.

The guard tells a stall from a quiet time by the gap between its calls, so the
calls must not stop while the worker executes a run: the lease keeper's thread
reaps too (:meth:`Upkeep.tick`, every ``lease / 5``, below the guard's gap of
``lease / 3``), and the idle loop every :data:`IDLE_EVERY_S`. A lock keeps the
two apart.

Fork safety: owned by one worker in one process; the lock is not shared with
any process.
"""

from __future__ import annotations

import threading
import time

from . import maintenance
from .errors import TRANSIENT_ERRORS
from .maintenance import StallGuard, Store

__all__ = ["IDLE_EVERY_S", "Upkeep"]

#: How often an idle worker promotes, wakes and reaps (s).
IDLE_EVERY_S = 0.2


class Upkeep:
    """Maintenance of one standalone worker (see the module doc)."""

    def __init__(self, client: Store, lease_ms: int) -> None:
        self.client = client
        self.guard = StallGuard(lease_ms, int(IDLE_EVERY_S * 1000))
        self._lock = threading.Lock()
        self._next = 0.0

    def idle(self) -> None:
        """From the idle loop: promote, wake and reap, at most every :data:`IDLE_EVERY_S`.
        Redis trouble is left to the idle wait that follows (it says so)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + IDLE_EVERY_S
        with self._lock:
            try:
                maintenance.promote_due(self.client)
                maintenance.wake_due(self.client)
                maintenance.reap_expired(self.client, guard=self.guard)
            except TRANSIENT_ERRORS:
                self.guard.failed()

    def tick(self) -> None:
        """From the lease keeper's thread: reap, so the guard's calls go on while a
        run executes (a run longer than the guard's gap was taken for a stall)."""
        if not self._lock.acquire(blocking=False):
            return  # the idle loop is at it
        try:
            maintenance.reap_expired(self.client, guard=self.guard)
        except TRANSIENT_ERRORS:
            self.guard.failed()
        finally:
            self._lock.release()
