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
tree sent every cancel several times (harmless, but for nothing).
"""

from __future__ import annotations

import logging

from redflow_mp.cascade import finish_pending
from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import stores

from .leader import LeaderDuty

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

    def tick(self, now: float) -> float:
        if self.leader is not None and not self.leader.is_leader:
            return now + min(self.interval, 1.0)  # a new leader starts within a second
        errors: list[Exception] = []
        for store in stores(self.client):
            try:
                walked = finish_pending(self.client, store)
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
