"""Queue keys of the wrong type: found, named once, left out, looked at again.

A worker's claim reads the ready sets of all its queues in one script and its
idle wait blocks on all their bells in one BLPOP, so one queue key that holds
another type of value (set by hand, or by another program writing into our
prefix) made every claim or wait fail: the children crashed in a loop and the
runs of every other queue stalled. :class:`Bench` finds which keys are at fault
(``TYPE``), logs each one once per :data:`RECHECK_S` with its name, and leaves
that queue (ready set) or that bell out until then; the other queues go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import TRANSIENT_ERRORS
from .keys import STATUSES, Keys

__all__ = ["RECHECK_S", "Bench", "shared_keys"]

log = logging.getLogger("redflow_mp.worker")

RECHECK_S = 10.0
"""How long a key found of the wrong type is left out before it is tried again."""


class Bench:
    """Keys left out of claims (ready sets) or of the idle wait (bells) until a time."""

    def __init__(self, recheck_s: float = RECHECK_S) -> None:
        self.recheck_s = recheck_s
        self._until: dict[str, float] = {}

    def __bool__(self) -> bool:
        """Any key left out (the hot path asks nothing more when none is)."""
        return bool(self._until)

    def benched(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:  # time to try it again
            del self._until[key]
            return False
        return True

    def keep(self, keys: Iterable[str]) -> list[str]:
        """``keys`` without the benched ones."""
        return [k for k in keys if not self.benched(k)]

    def check(
        self, redis: Any, keys: Sequence[str], expected: str, what: str, effect: str = ""
    ) -> list[str]:
        """``TYPE`` of each of ``keys`` (one pipeline); the ones that hold neither
        nothing nor ``expected`` are benched and returned; each is logged once per
        recheck period, with ``effect`` (default: that queue is left out)."""
        try:
            with redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                kinds = pipe.execute()
        except TRANSIENT_ERRORS:
            return []
        wrong = []
        for key, kind in zip(keys, kinds, strict=True):
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind in ("none", expected):
                continue
            wrong.append(key)
            if self.benched(key):
                continue  # said already
            self._until[key] = time.monotonic() + self.recheck_s
            log.error(
                "%s key %s holds a %s, not a %s (written by hand or by another program?): "
                "%s; delete or rename it",
                what,
                key,
                kind,
                expected,
                effect or f"left out for {self.recheck_s:.0f} s, the other queues go on",
            )
        return wrong


def shared_keys(keys: Keys, workflows: Iterable[str] = ()) -> dict[str, list[str]]:
    """The keys shared by many runs that a claim writes (prefix-wide, and the
    concurrency gates of ``workflows``), by the type they must have."""
    zsets = [keys.leases, keys.runs_created, *(keys.runs_status(s) for s in STATUSES)]
    sets = [keys.parked, keys.queues, *(keys.wf_running(w) for w in workflows)]
    return {"zset": zsets, "set": sets}
