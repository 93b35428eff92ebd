"""Put runs back into the keys that list them, when Redis lost such a key.

A queue's ready and scheduled sets, ``due-queues``, a workflow's waiting set
(``wf-waiting:<wf>``) and concurrency slots (``wf-running:<wf>``), the status
indexes, ``runs:created`` and ``workflow-runs:<wf>`` each list many runs: one
of them evicted (an evicting ``maxmemory-policy``) or deleted (by hand, by
another program on the same Redis) hid its runs from every other duty for
good: queued runs nobody claimed, scheduled runs nobody promoted, finished runs
never listed nor removed by retention. This duty walks every run record, a page
of :data:`~redflow_mp.lostkeys.RELIST_PAGE` a call, and puts back those missing
from the key their record says holds them
(:func:`~redflow_mp.lostkeys.relist_runs`, ``relist_runs.lua``), with a WARNING.
The cursor is kept in Redis (``relist``), so a new leader goes on where the
last one stopped.

Pace: a page every :data:`BETWEEN_PAGES` while a pass lasts, a pass every
:data:`BETWEEN_PASSES`: a store of a few thousand runs is covered within
about 45 s of a loss, a million runs in about 70 minutes (4,085 pages of
~3 ms of Redis CPU each, some 0.3 % of a core; docs/operations.md). Nothing
is done on the hot path: enqueues and claims write exactly what they did.

Only the cron leader does it (``leader``), in every shard: the work is the same
whoever does it."""

from __future__ import annotations

import logging

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.lostkeys import RELIST_PAGE, relist_runs
from redflow_mp.maintenance import stores

from .leader import LeaderDuty
from .shards import ServerStalls

__all__ = ["BETWEEN_PAGES", "BETWEEN_PASSES", "RelistDuty"]

log = logging.getLogger("redflow_supervisor")

#: Seconds between two pages of a pass. At 0.1 s the sweep took 3 % of a core of
#: Redis for good at a million runs, and 16.5 µs of Redis time per run of a 5,000-run
#: drain (benchmarks W1, SLOWLOG pass); a repair within minutes does not need it.
BETWEEN_PAGES = 1.0
#: Seconds between the end of a pass and the start of the next one.
BETWEEN_PASSES = 30.0


class RelistDuty:
    name = "relist"

    def __init__(
        self,
        client: Client,
        leader: LeaderDuty | None = None,
        page: int = RELIST_PAGE,
        between_pages: float = BETWEEN_PAGES,
        between_passes: float = BETWEEN_PASSES,
    ) -> None:
        self.client = client
        self.leader = leader  # None: always (a lone caller)
        self.page = page
        self.between_pages = between_pages
        self.between_passes = between_passes
        self.relisted = 0
        self.passes = 0
        self._due = [0.0] * len(stores(client))  # per shard: when its next page is due
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)

    def tick(self, now: float) -> float:
        if self.leader is not None and not self.leader.is_leader:
            return now + 1.0  # a new leader starts within a second
        errors: list[Exception] = []
        self.stalls.clear()
        for i, store in enumerate(stores(self.client)):
            if now < self._due[i]:
                continue
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    got = relist_runs(store, self.page)
            except TRANSIENT_ERRORS as exc:  # that shard down: the others go on
                self._due[i] = now + 1.0
                errors.append(exc)
                continue
            if got.done:
                self.passes += 1
            self._due[i] = now + (self.between_passes if got.done else self.between_pages)
            if got.put:
                self.relisted += len(got.put)
                self._warn(got.put)
        if errors:  # reported (the duty's warning); the shards that answered are done
            raise errors[0]
        return min(self._due)

    @staticmethod
    def _warn(put: list[tuple[str, str]]) -> None:
        by_key: dict[str, list[str]] = {}
        for run_id, key in put:
            by_key.setdefault(key, []).append(run_id)
        for key, ids in by_key.items():
            log.warning(
                "%d runs were missing from %s (Redis lost the key or its entries: "
                "evicted under maxmemory, or deleted): put them back (%s)",
                len(ids),
                key,
                ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
            )
