"""Requeue runs whose lease expired (their worker, or a whole supervisor, is
gone or cut off) and release parked runs when their workflow has free slots.
One tick reads the expired leases batch after batch until a short batch (with
an upper bound), so however many runs are in flight every expired lease is
found within a tick; with several shards, each shard's ``leases`` in turn.

It also lists the queues this supervisor serves in ``queues`` (for ``redflow
queues`` and the metrics, before anything is enqueued on them): when they
change and every :data:`ANNOUNCE_EVERY` seconds (a FLUSHALL lost them), not
every tick: an SADD of 1,000 names every half second was the largest cost of a
supervisor at rest. At the same times it gives a page of running runs whose
``leases`` entry Redis lost (the key evicted or deleted) an entry again
(:func:`~redflow_mp.lostkeys.rearm_leases`): without one the reaper never saw
them and they stayed running for good.

With ``take_over``, it also takes over the ``on_failure`` hooks past their
deadline in ``on-failure-due`` whose workflow this supervisor loads (their
process died before the hook returned: ``redflow_mp.hookdue``), up to
``hookdue.TAKE_BATCH`` per shard a tick, and hands each to ``take_over``
(a short-lived process calls the hook).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.hookdue import Takeover
from redflow_mp.lostkeys import rearm_leases
from redflow_mp.maintenance import StallGuard, announce_queues, reap_expired, stores

from ..exposition import MetricsStore
from .shards import ServerStalls

__all__ = ["ANNOUNCE_EVERY", "ReaperDuty"]

#: How often a refused takeover (a key of another type) is logged, at most.
_REFUSAL_EVERY = 10.0

log = logging.getLogger("redflow_supervisor")

#: How often the served queues are listed again when they did not change (s).
ANNOUNCE_EVERY = 60.0


class ReaperDuty:
    name = "reaper"

    def __init__(
        self,
        client: Client,
        interval_ms: int,
        metrics: MetricsStore | None = None,
        queues: Callable[[], tuple[str, ...]] = tuple,
        lease_ms: int = 5000,
        hooked: Callable[[], tuple[str, ...]] = tuple,
        take_over: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        # After Redis was out of reach (a stall, restart or cut), hold off a
        # lease so that live workers renew before anything is taken back.
        self.guard = StallGuard(lease_ms, interval_ms)
        self.lease_ms = lease_ms
        self._running_at: dict[int, int] = {}  # per shard: the next page's rank
        self.queues = queues
        self.stalls = ServerStalls()  # one stalled server blocks a tick once (shards.py)
        self.interval = interval_ms / 1000.0
        self.metrics = metrics
        self.requeued = 0
        # what was listed, and when (monotonic s): (queues, at)
        self._announced: tuple[tuple[str, ...], float] | None = None
        self.hooked = hooked  # the workflows whose on_failure this supervisor runs
        self.take_over = take_over
        self._takeover = Takeover()
        self._refused_at = float("-inf")  # when a refused takeover was last logged

    def _rearm(self, index: int, store: Any) -> None:
        """A page of running runs whose ``leases`` entry Redis lost gets one again."""
        self._running_at[index], ids = rearm_leases(
            store, self._running_at.get(index, 0), self.lease_ms
        )
        if ids:
            log.warning(
                "%d running runs had no entry in %s (Redis lost it: evicted under "
                "maxmemory, or deleted): gave them a lease again, which their worker "
                "renews or the reaper takes back (%s)",
                len(ids),
                store.keys.leases,
                ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""),
            )

    def _take_hooks(
        self, index: int, store: Any, names: Callable[[], frozenset[str]], now: float
    ) -> None:
        """Take over the hooks past their deadline in one shard (``names``, the
        workflows whose hooks this supervisor runs, is asked only when one is due).
        A refusal (a key of another type, reported by the key check duty) is
        logged once per ``_REFUSAL_EVERY`` s, and the tick goes on."""
        if self.take_over is None:
            return
        try:
            taken = self._takeover.take(index, store, names)
        except redis.RedisError as exc:  # WrongTypeError, any other refusal
            if isinstance(exc, TRANSIENT_ERRORS):
                raise
            if now - self._refused_at >= _REFUSAL_EVERY:
                self._refused_at = now
                log.error("could not take over on_failure hooks: %s", exc)
            return
        for run_id, _workflow in taken:
            self.take_over(run_id)

    def tick(self, now: float) -> float:
        queues = self.queues()
        announce = (
            self._announced is None
            or self._announced[0] != queues
            or now - self._announced[1] >= ANNOUNCE_EVERY
        )
        requeued: list[str] = []
        errors: list[Exception] = []
        names = _Once(self.hooked)  # asked at most once a tick, only when a hook is due
        self.stalls.clear()
        for index, store in enumerate(stores(self.client)):
            try:
                with self.stalls.call(store):  # its server stalled this tick: not called
                    if announce:
                        # Every shard lists the queues served: a queue's runs may be in any shard.
                        announce_queues(store, queues)
                        self._rearm(index, store)
                    requeued.extend(reap_expired(store, guard=self.guard, index=index)[1])
                    self._take_hooks(index, store, names, now)
            except TRANSIENT_ERRORS as exc:  # one shard down: the next ones still reaped
                errors.append(exc)
        if announce and not errors:
            self._announced = (queues, now)
        self.requeued += len(requeued)
        if requeued and self.metrics is not None:
            self.metrics.inc("redflow_leases_expired_total", float(len(requeued)))
        if errors:  # reported (the duty's warning); the shards that answered are done
            raise errors[0]
        return now + self.interval


class _Once:
    """``hooked()`` as a set, asked at most once (a tick's shards share it)."""

    def __init__(self, hooked: Callable[[], tuple[str, ...]]) -> None:
        self._hooked = hooked
        self._names: frozenset[str] | None = None

    def __call__(self) -> frozenset[str]:
        if self._names is None:
            self._names = frozenset(self._hooked())
        return self._names
