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
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.registry import Registry
from redflow_mp.sync import registry_gaps

__all__ = ["RegistryDuty"]

log = logging.getLogger("redflow_supervisor")

#: Seconds between two quick checks: how long crons may stay silent after a FLUSHALL.
CHECK_INTERVAL = 5.0
#: Quick checks between two full ones (every minute with the default interval).
FULL_EVERY = 12


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
        self._ticks = 0

    def tick(self, now: float) -> float:
        registry = self.registry()
        names = [wf.name for wf in registry]
        if not names:
            return now + self.interval
        self._ticks += 1
        try:
            if self._ticks % FULL_EVERY and not self._one_per_shard_gone(names):
                return now + self.interval
            gaps = registry_gaps(self.client, names)
        except TRANSIENT_ERRORS:
            return now + self.interval  # Redis out of reach: the next tick looks again
        if gaps:
            shown = ", ".join(repr(n) for n in gaps[:5])
            more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
            log.warning(
                "the metadata or cron entries of %d workflow(s) of app %r are gone from "
                "Redis (%s%s: a FLUSHALL, a restart without persistence or a failover to "
                "an empty replica?); writing them again",
                len(gaps),
                self.app,
                shown,
                more,
            )
            self.client.sync_registry(registry, app=self.app)
            self.resynced += 1
        return now + self.interval

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
