"""A worker's claim pass over shards (``shards > 1``): one claim per shard, in
the order the worker chose, until one answers a run.

Invariants: the pass stops at the first run found, so a worker never holds two
runs. A shard that answered until now and fails with a network error may have
run the claim and lost its reply (a reset between Redis applying ``claim_run``
and the worker reading it): it is sent the claim again at once, with the same
token and the resend flag (``retake`` in ``claim_run.lua`` answers the run that
token took, if any), before the pass moves on to another shard. Only if that
resend fails too is the shard taken as down: skipped for
:data:`SHARD_DOWN_RETRY` s (a hung host costs a timeout per try), and a run its
claim may have taken is the reaper's (or a later resend's, when no other shard
gave a run: :class:`redflow_mp.lostclaim.LostClaim`). The shard carrying the
finish of the worker's last run is never skipped: its error ends the pass.

Owned by :class:`redflow_mp.worker.Worker`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from .errors import TRANSIENT_ERRORS
from .scripts import Claimed
from .shardset import Shard

__all__ = ["SHARD_DOWN_RETRY", "ShardPass"]

log = logging.getLogger("redflow_mp.worker")

#: A shard whose claim failed (master unreachable) is skipped this long (s).
SHARD_DOWN_RETRY = 5.0

#: One claim sent to a shard: ``send(shard, resend)`` -> (finish result, run).
Send = Callable[[Shard, bool], tuple[str, Claimed | None]]


class ShardPass:
    """The shards down (skipped until a time) and whether the last pass had a
    shard not answer (:attr:`unanswered`: its token is to be resent)."""

    def __init__(self) -> None:
        self.down: dict[int, float] = {}  # failed shard -> skipped until (monotonic)
        self.unanswered = False

    def run(
        self, shards: Iterable[Shard], owed: Shard | None, again: bool, send: Send
    ) -> tuple[str, Claimed | None]:
        """Send the claim to ``shards`` in turn (those down last, skipped until
        their retry time unless ``owed``, the shard whose claim carries the finish)
        until one answers a run; returns the finish's result and the run.
        ``again``: the whole claim is a resend already. Raises the first error when no shard
        answered, or the owed shard's error."""
        self.unanswered = False
        now, result, errors = time.monotonic(), "", []
        order = sorted(shards, key=lambda s: s.index in self.down and s is not owed)
        for shard in order:
            if shard is not owed and self.down.get(shard.index, 0.0) > now:
                continue
            try:
                got, claimed = send(shard, again)
            except TRANSIENT_ERRORS as exc:
                if shard is owed:  # the finish must reach its shard: back off, resend
                    raise
                answer = self._resend(shard, send, exc)
                if answer is None:
                    errors.append(exc)
                    continue
                got, claimed = answer
            if shard is owed:
                result = got  # the finish's outcome, whichever shard gives a run
            self.down.pop(shard.index, None)
            if claimed is not None:
                return result, claimed
        if len(errors) == len(order):  # none answered: the caller backs off
            raise errors[0]
        self.unanswered = bool(errors)  # a lost reply: this token is resent
        return result, None

    def _resend(
        self, shard: Shard, send: Send, exc: Exception
    ) -> tuple[str, Claimed | None] | None:
        """A claim to ``shard`` failed with ``exc``: resend it at once if the shard
        was up (its reply may be lost); None when the shard is down."""
        if shard.index not in self.down:
            log.warning("shard %d: no reply to a claim (%s); resending it", shard.index, exc)
            try:
                return send(shard, True)
            except TRANSIENT_ERRORS:
                log.warning("shard %d unreachable (%s); claiming elsewhere", shard.index, exc)
        self.down[shard.index] = time.monotonic() + SHARD_DOWN_RETRY
        return None
