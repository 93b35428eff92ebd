"""Finish the cancel cascades that their canceller left unfinished.

A cancel ends the parent ``canceled`` in one script call, which also records it
in ``cascades``; its canceller (``Client.cancel_run``, the worker of a run that
ended canceled) then cancels the children in later calls and removes the
entry. A canceller SIGKILLed (or cut off from Redis for good) between the two
left the children running or queued, holding their workflow's
``max_concurrency`` slots, and nobody canceled them. This duty hands, every
:data:`INTERVAL` seconds, each shard's entries older than
:data:`~redflow_mp.cascade.PENDING_AGE_MS` (a page of them) to
:func:`~redflow_mp.cascade.finish_pending`.

Only the cron leader does it (``leader``): several supervisors walking the same
tree sent every cancel several times (harmless, but for nothing). A pass sends
at most :data:`~redflow_mp.cascade.PASS_BUDGET` cancels, all shards together; a
walk cut by it (or by ``MAX_CASCADE``) goes on at the next pass after the last
child it sent a cancel, from the SSCAN page it was in (the parent's ``cascadeAt``),
never from the first again, and without listing the whole children set.
"""

from __future__ import annotations

import logging

from redflow_mp import cascade
from redflow_mp.cascade import Budget, finish_pending
from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import stores

from .leader import LeaderDuty
from .shards import ServerStalls

__all__ = ["CascadeDuty"]

log = logging.getLogger("redflow_supervisor")

#: Seconds between two passes (one ZRANGEBYSCORE per shard when none is owed).
INTERVAL = 5.0


class CascadeDuty:
    name = "cascades"

    def __init__(
        self, client: Client, leader: LeaderDuty | None = None, interval: float = INTERVAL
    ) -> None:
        self.client = client
        self.leader = leader  # None: always (a lone caller)
        self.interval = interval
        self.finished = 0
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)

    def tick(self, now: float) -> float:
        if self.leader is not None and not self.leader.is_leader:
            return now + min(self.interval, 1.0)  # a new leader starts within a second
        errors: list[Exception] = []
        budget = Budget(cascade.PASS_BUDGET)  # all shards together
        self.stalls.clear()
        for store in stores(self.client):
            if budget.left <= 0:
                break  # the next pass goes on (each walk where it stopped)
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    walked = finish_pending(self.client, store, budget=budget)
            except TRANSIENT_ERRORS as exc:  # one shard down: the next ones still done
                errors.append(exc)
                continue
            self.finished += len(walked)
            if walked:
                log.warning(
                    "%d canceled runs had children left uncanceled (their canceller died "
                    "or lost Redis before canceling them): canceled them (%s)",
                    len(walked),
                    ", ".join(walked[:10]) + (" ..." if len(walked) > 10 else ""),
                )
        if errors:  # reported (the duty's warning); the shards that answered are done
            raise errors[0]
        return now + self.interval
