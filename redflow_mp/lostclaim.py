"""A claim whose reply was lost (a network error after it was sent): the worker
cannot tell whether Redis ran it. Its token is kept and the claim resent with it
(``claim_run.lua`` answers the run that token took, if any, again: it starts at
once, not a lease later once the reaper puts it back). A worker that stops
before a resend got through gives back what the lost claim may have taken.

Owned by :class:`redflow_mp.worker.Worker`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .errors import TRANSIENT_ERRORS
from .ids import new_token
from .shardset import Shard

__all__ = ["LostClaim"]

log = logging.getLogger("redflow_mp.worker")


class LostClaim:
    """The token of the last claim that got no reply ('' when none)."""

    def __init__(self) -> None:
        self.token = ""

    def next_token(self) -> tuple[str, bool]:
        """The token of the next claim, and whether it is a resend."""
        if self.token:
            return self.token, True
        return new_token(), False

    def failed(self, token: str, exc: BaseException) -> None:
        """The claim with ``token`` failed with ``exc``: keep the token if Redis
        may have run it (a network error; a refusal wrote nothing)."""
        if token and isinstance(exc, TRANSIENT_ERRORS):
            self.token = token

    def give_back(self, shards: Iterable[Shard], lease_ms: int) -> None:
        """Stopping with a claim unanswered: put back the run it took, if any
        (``requeue_claimed``; the reaper does it a lease later if Redis is out of
        reach now)."""
        token, self.token = self.token, ""
        if not token:
            return
        cause = "worker stopped after a claim whose reply was lost"
        for shard in shards:
            try:
                for run_id, status in shard.scripts.requeue_claimed(token, cause, lease_ms):
                    log.warning("run %s put back (%s): %s", run_id, status, cause)
            except TRANSIENT_ERRORS as exc:
                log.warning("could not put back a run of a lost claim (%s): the reaper will", exc)
