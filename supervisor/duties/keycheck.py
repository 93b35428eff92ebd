"""Look for keys shared by many runs that hold another type of value than
redflow-mp writes there (written by hand or by another program into the
prefix), every :data:`~redflow_mp.keycheck.CHECK_S`, and name each one in an
ERROR line: the key, the type found and expected, what it costs, what to do.

The scripts never fail half-way on such a key (a listing index is skipped, a
set that places a run is written first), so without this check an index of
the wrong type would only show as runs missing from a listing. Cost: one
pipeline of ``TYPE`` per shard a minute: the prefix-wide keys, and the next
:data:`KEYS_PER_TICK` of the keys named by the workflows and queues served
(seven per workflow, three per queue), in turn. Up to that many (100 workflows
and queues), every key every minute; past it a full pass spans several minutes
(1,000 workflows and 1,000 queues: 10,000 keys, 10 minutes) instead of 10,000
``TYPE`` a minute per supervisor (8,000 took 134 commands/s each on an idle Redis).

Each tick also puts the runs listed in ``runs:unindexed`` (finished while their
``runs:status:<status>`` held another type of value) back into that index once it
is a sorted set again, so the listing by status shows them
(:func:`~redflow_mp.maintenance.reindex_unindexed`; nothing more while the key
is missing, as it is unless such a run exists: the ``TYPE`` pipeline tells).
The same tick looks for keys Redis evicted (:mod:`.eviction`: one ``INFO
memory`` and one ``INFO stats`` per shard).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.keycheck import CHECK_S, expected_types, types_of, wrong_of
from redflow_mp.maintenance import reindex_unindexed, stores

from .eviction import EvictionWatch
from .shards import ServerStalls

__all__ = ["KEYS_PER_TICK", "KeyCheckDuty"]

#: Keys named by workflows and queues looked at per tick, at most (see above).
KEYS_PER_TICK = 1000

log = logging.getLogger("redflow_supervisor")


class KeyCheckDuty:
    name = "keycheck"

    def __init__(
        self,
        client: Client,
        workflows: Sequence[str] | Callable[[], Sequence[str]],
        queues: Callable[[], tuple[str, ...]] = tuple,
        interval: float = CHECK_S,
        per_tick: int = KEYS_PER_TICK,
    ) -> None:
        self.client = client
        # the names, or how to read them now (a HUP reload changes the registry)
        self._workflows = workflows
        self.queues = queues
        self.interval = interval
        self.per_tick = per_tick
        self.found: list[str] = []  # the keys named by the last check
        self._next: dict[int, int] = {}  # per shard: where the next turn starts
        self.evictions = EvictionWatch()  # keys Redis evicted since the last check
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)

    @property
    def workflows(self) -> tuple[str, ...]:
        names = self._workflows() if callable(self._workflows) else self._workflows
        return tuple(names)

    @staticmethod
    def _reindex(store: Any) -> None:
        """Put the runs that finished while their status index was of another type
        back into it once it is a sorted set again (the listing by status reads the
        index only)."""
        moved = reindex_unindexed(store)  # Redis trouble: the caller's
        if moved:
            log.info(
                "put %d runs back into their status index (they finished while it held "
                "another type of value)",
                moved,
            )

    def tick(self, now: float) -> float:
        found = []
        queues = self.queues()
        workflows = self.workflows
        self.stalls.clear()
        for index, store in enumerate(stores(self.client)):
            shared = expected_types(store.keys)
            named = expected_types(store.keys, workflows, queues)[len(shared) :]
            # this tick's turn of the named keys (a reload may change them: the
            # turn goes on from where it was, modulo their new number)
            start = self._next.get(index, 0) % max(1, len(named))
            turn = list(itertools.islice(itertools.cycle(named), start, start + self.per_tick))
            turn = turn[: len(named)]
            checked = shared + turn
            keys = [key for key, _, _ in checked]
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    kinds = types_of(store.redis, keys)
            except TRANSIENT_ERRORS:  # its turn next tick (a stall: the schedule's gate arms)
                continue
            wrong = wrong_of(checked, kinds)
            self._next[index] = start + len(turn)
            # Redis away: the next look tells (its server stalled: not called)
            with contextlib.suppress(*TRANSIENT_ERRORS), self.stalls.call(store):
                self.evictions.look(index, store.redis)
            for key, kind, want, cost in wrong:
                found.append(key)
                log.error(
                    "key %s holds a %s, not a %s (written by hand or by another program?): "
                    "%s; delete or rename it",
                    key,
                    kind,
                    want,
                    cost,
                )
            if kinds[keys.index(store.keys.runs_unindexed)] == "zset":
                # some runs to put back (none: the key is missing); Redis away: next tick
                with contextlib.suppress(*TRANSIENT_ERRORS), self.stalls.call(store):
                    self._reindex(store)
        self.found = found
        return now + self.interval
