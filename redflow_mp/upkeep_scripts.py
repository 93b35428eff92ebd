"""The upkeep scripts' calls (retention, reindexing, idle queue names, rate
re-planning), mixed into :class:`~redflow_mp.scripts.Scripts`: the duties of
``maintenance.py`` and the registry sync call them, never a worker's hot path.
"""

from __future__ import annotations

from typing import Any

from .codec import text
from .keys import Keys

__all__ = ["UpkeepCalls"]


class UpkeepCalls:
    """Typed calls of the upkeep scripts; needs the host's ``run`` (see Scripts)."""

    keys: Keys

    def run(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], *, retry: bool) -> Any:
        raise NotImplementedError

    def sweep(self, retention_ms: int, batch: int) -> int:
        """One retention call; returns the runs removed."""
        return self.sweep_step(retention_ms, batch)[0]

    def sweep_step(self, retention_ms: int, batch: int) -> tuple[int, bool]:
        """One retention call: (runs removed, more to do now: a full batch, or the
        call's budget of event lists ran out)."""
        reply = self.run(
            "sweep_runs",
            (self.keys.runs_created,),
            (self.keys.tag, retention_ms, batch),
            retry=True,
        )
        return int(reply[0]), int(reply[1]) == 1

    def reindex(self, batch: int, offset: int = 0) -> tuple[int, int, int]:
        """Put up to ``batch`` runs of ``runs:unindexed`` (from the ``offset``-th on)
        back into their status index where it is a sorted set again: (runs put
        back, entries left because their index still is not, entries read)."""
        reply = self.run(
            "reindex_runs", (self.keys.runs_unindexed,), (self.keys.tag, batch, offset), retry=True
        )
        return int(reply[0]), int(reply[1]), int(reply[2])

    def forget_queues(self, candidates: list[str], served: list[str]) -> list[str]:
        """Drop the idle ``candidates`` (not in ``served``, nothing ready or
        scheduled) from the ``queues`` set; returns the names dropped."""
        if not candidates:
            return []
        reply = self.run(
            "forget_queues",
            (self.keys.queues,),
            (self.keys.tag, len(served), *served, *candidates),
            retry=True,
        )
        return [text(x) for x in reply]

    def replan_rate(self, workflow: str, batch: int = 100) -> tuple[int, bool]:
        """The rate limit of ``workflow`` changed: put the runs waiting on a start
        reserved under the old one back in their ready sets (at most ``batch`` log
        entries per call). Returns (runs put back, more to do: call again)."""
        reply = self.run(
            "replan_rate", (self.keys.rate(workflow),), (self.keys.tag, workflow, batch), retry=True
        )
        return int(reply[0]), int(reply[1]) == 1
