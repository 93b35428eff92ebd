"""Write the registry again when Redis lost it.

A supervisor syncs its registry (workflow metadata, cron entries) at start and
on HUP. A FLUSHALL, a Redis restart without persistence or a failover to a
replica that had nothing leaves the supervisor running with nothing synced: no
cron fires again and ``run_by_name`` from a client without the code finds no
workflow, silently, until someone restarts it. Every few seconds this duty
looks at one workflow's metadata per shard (a FLUSHALL or an empty replica
takes them all), and every minute at everything the last sync of this
supervisor's workflows wrote (:func:`~redflow_mp.sync.registry_gaps`: two
pipelined reads per shard and 1,000 workflows; an eviction takes single keys);
it syncs again when something is gone, saying so in the log.

For :data:`ADOPT_WINDOW` seconds after each registration (the start-up sync,
a HUP's, a sync again) it also adopts the runs stranded on ``default``: a client
without the code that enqueued by name while Redis had no metadata for the
workflow put the run on ``default`` (``queueFallback``, listed in
``fallback-runs``), where no worker may ever look. ``adopt_runs.lua`` moves those
whose workflow is registered now to its queue, :data:`ADOPT_BATCH` entries a
call and at most :data:`ADOPT_CALLS` calls per shard a tick; outside the window
nothing is read, so normal operation pays nothing per run.

When it finds registrations gone it first writes the ``registry-lost`` marker
(:data:`~redflow_mp.foreign.LOST_MARKER_MS`, in the shards that lost them): with
several apps on one prefix, a worker of another app serving ``default`` would
otherwise fail such a run (``UnknownWorkflowError``) before the supervisor of
its own app wrote its registration again and adopted it; while the marker lives
it puts the run back instead (:func:`redflow_mp.foreign.held_after_loss`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import redis

from redflow_mp.client import Client
from redflow_mp.codec import text
from redflow_mp.errors import TRANSIENT_ERRORS, RedflowError
from redflow_mp.foreign import LOST_MARKER_MS
from redflow_mp.registry import Registry
from redflow_mp.sync import check_cron_inputs, registry_gaps

from .shards import ServerStalls

__all__ = ["RegistryDuty"]

log = logging.getLogger("redflow_supervisor")

#: Seconds between two quick checks: how long crons may stay silent after a FLUSHALL.
CHECK_INTERVAL = 5.0
#: Quick checks between two full ones (every minute with the default interval).
FULL_EVERY = 12
#: Seconds after a registration during which runs stranded on ``default`` are adopted.
ADOPT_WINDOW = 60.0
#: Entries of ``fallback-runs`` read per ``adopt_runs`` call.
ADOPT_BATCH = 200
#: ``adopt_runs`` calls per shard and tick, at most.
ADOPT_CALLS = 5


class RegistryDuty:
    name = "registry"

    def __init__(
        self,
        client: Client,
        registry: Callable[[], Registry],
        app: str,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self.client = client
        self.registry = registry  # the current one (a HUP reload replaces it)
        self.app = app
        self.interval = interval
        self.resynced = 0
        self.adopted = 0  # runs moved off default so far
        self._ticks = 0
        self._for: Registry | None = None
        self._adopt_until = 0.0
        self._offsets: dict[int, int] = {}  # per shard: the entries kept so far
        # per shard: run_id, uptime, as at the start-up sync (just before), to tell a
        # restart from a FLUSHALL; read at the first tick when Redis was out of reach
        self._seen: dict[int, tuple[str, int]] | None = None
        with contextlib.suppress(*TRANSIENT_ERRORS):
            self._seen = self._servers()
        self._seen_first = False  # _seen was read in this tick (no earlier look to compare)
        self.stalls = ServerStalls()  # a timeout it swallowed (shards.py)
        self._changed: list[int] = []  # the shards whose server restarted (_what_happened)
        self._refused: Registry | None = None  # the registry the sync refused, said once
        # when the registry was last written (monotonic): the start-up sync, about now
        self._synced_at = time.monotonic()

    def tick(self, now: float) -> float:
        registry = self.registry()
        if registry is not self._for:  # the start-up sync (or a HUP's) registered it
            self._for = registry
            self._adopt_from(now)
        names = [wf.name for wf in registry]
        if not names:
            return now + self.interval
        self._ticks += 1
        self.stalls.clear()
        try:
            # a timeout swallowed here still arms the schedule's gate (shards.py)
            with self.stalls.call(self.client):
                self._seen_first = self._seen is None
                if self._seen is None:  # the servers as they were (to tell a restart)
                    self._seen = self._servers()
                if self._ticks % FULL_EVERY and not self._one_per_shard_gone(names):
                    self._adopt(now)
                    return now + self.interval
                gaps = registry_gaps(self.client, names)
        except TRANSIENT_ERRORS:
            return now + self.interval  # Redis out of reach: the next tick looks again
        self._resync(registry, gaps, now)
        # the next tick adopts
        with contextlib.suppress(*TRANSIENT_ERRORS), self.stalls.call(self.client):
            self._adopt(now)
        return now + self.interval

    def _resync(self, registry: Registry, gaps: list[str], now: float) -> None:
        if gaps and not self._sync_refuses(registry):
            shown = ", ".join(repr(n) for n in gaps[:5])
            more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
            gone = (
                f"the metadata or cron entries of {len(gaps)} workflow(s) of app "
                f"{self.app!r} are gone from Redis ({shown}{more}"
            )
            log.warning("%s", self._what_happened(gone))
            self._mark_lost(gaps)  # before the sync: no moment with neither
            self.client.sync_registry(registry, app=self.app)
            self._synced_at = time.monotonic()
            self.resynced += 1
            self._adopt_from(now)

    def _sync_refuses(self, registry: Registry) -> bool:
        """Whether the sync refuses ``registry`` (a cron input past
        max_payload_bytes, after a reload: ``startup.resync`` logged it). Its
        workflows the refused sync would have added are never-synced, not lost:
        no "gone from Redis", no ``registry-lost`` marker, no sync failing again
        every full check (it did, every minute)."""
        try:
            check_cron_inputs(registry.list(), self.client.max_payload_bytes)
        except RedflowError as exc:
            if self._refused is not registry:
                self._refused = registry
                log.error(
                    "registry check: not syncing the reloaded registry, which the sync refused: %s",
                    exc,
                )
            return True
        return False

    def _servers(self) -> dict[int, tuple[str, int]]:
        """Per shard: its server's ``run_id`` and uptime (s), from ``INFO server``
        (left out where INFO is refused: an ACL without it)."""
        out: dict[int, tuple[str, int]] = {}
        for shard in self.client.shards:
            try:
                info = shard.redis.info("server")
            except redis.ResponseError:
                continue
            out[shard.index] = (text(info.get("run_id", "")), int(info.get("uptime_in_seconds", 0)))
        return out

    def _what_happened(self, gone: str) -> str:
        """``gone`` (the loss, an open parenthesis) with its cause: a server whose
        ``run_id`` changed since the last look restarted (or another one took over),
        and what that lost, as did one up for less time than since the registry was
        written; the same server, up all along, lost keys while it ran."""
        before, now_seen = self._seen or {}, self._servers()
        self._seen = now_seen
        elapsed = time.monotonic() - self._synced_at
        changed = self._changed = [
            i
            for i, (rid, up) in now_seen.items()
            if (i in before and before[i][0] != rid) or up + 1 < elapsed
        ]
        if changed:
            shard = self.client.shards[changed[0]]
            up = now_seen[changed[0]][1]
            if not shard.redis.exists(shard.keys.workflows):
                return (
                    f"Redis came back empty: it restarted or failed over (its run_id changed; "
                    f"up {up} s) without the keys of prefix {shard.keys.tag} written before; "
                    f"{gone}); writing "
                    "them again. Runs that were queued, scheduled or running before are lost "
                    "unless Redis persisted them (appendonly, RDB snapshots); runs enqueued by "
                    "name since, put on queue 'default', are moved to their workflow's queue"
                )
            return (
                f"Redis restarted or failed over (its run_id changed; up {up} s) and came "
                f"back without some keys of prefix {shard.keys.tag} (an older snapshot, a "
                f"replica that lagged); {gone}); writing them again. What was written after "
                "that snapshot is lost, runs included"
            )
        if now_seen and not self._seen_first and all(i in before for i in now_seen):
            return (
                f"{gone}: deleted while Redis kept running, no restart: a FLUSHALL or "
                "FLUSHDB, a DEL, eviction under maxmemory); writing them again"
            )
        return (
            f"{gone}: a FLUSHALL, a restart without persistence or a failover to an "
            "empty replica?); writing them again"
        )

    def _mark_lost(self, gaps: list[str]) -> None:
        """Write the ``registry-lost`` marker (:data:`LOST_MARKER_MS`) in each shard
        that lost registrations: those of ``gaps`` and those whose server restarted.
        While it lives, a worker of another app puts back, rather than fails, a run
        enqueued on ``default`` in the gap whose workflow it does not load, so that its
        own app's supervisor, which may not have looked yet, adopts it (foreign.py)."""
        lost = {self.client.shard_of_workflow(n).index for n in gaps} | set(self._changed)
        for shard in self.client.shards:
            if shard.index in lost:
                shard.redis.set(shard.keys.registry_lost, self.app, px=LOST_MARKER_MS)

    def _adopt_from(self, now: float) -> None:
        """A registration at ``now``: adopt stranded runs for a while."""
        self._adopt_until = now + ADOPT_WINDOW
        self._offsets.clear()

    def _adopt(self, now: float) -> None:
        """Within the window: move runs stranded on ``default`` whose workflow is
        registered to its queue (``adopt_runs.lua``), a few pages per shard."""
        if now >= self._adopt_until:
            return
        moved = 0
        for shard in self.client.shards:
            offset = self._offsets.get(shard.index, 0)
            for _ in range(ADOPT_CALLS):
                m, kept, read = shard.scripts.adopt_runs(ADOPT_BATCH, offset)
                moved, offset = moved + m, offset + kept
                if read < ADOPT_BATCH:
                    offset = 0  # the end: the next tick starts over (runs enqueued since)
                    break
            self._offsets[shard.index] = offset
        if moved:
            self.adopted += moved
            log.warning(
                "moved %d run(s) from queue 'default' to their workflow's queue: they "
                "were enqueued by name while Redis had no metadata for their workflow "
                "(a client without the code, before this supervisor wrote it again)",
                moved,
            )

    def _one_per_shard_gone(self, names: list[str]) -> bool:
        """Whether the metadata of the first of ``names`` in some shard is gone."""
        firsts: dict[int, str] = {}
        for name in names:
            firsts.setdefault(self.client.shard_of_workflow(name).index, name)
        for name in firsts.values():
            shard = self.client.shard_of_workflow(name)
            if not shard.redis.exists(shard.keys.workflow(name)):
                return True
        return False
