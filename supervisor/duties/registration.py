"""Keep this supervisor's live registration of its workflows while it runs.

A supervisor syncs its registry at start (and at HUP); a sync withdraws the
app's registration of workflows the syncing registry lacks once that is older
than 30 s. Supervisors of one app that load different modules (one host per
module set, the same ``--app``) would then remove each other's workflow
metadata and cron entries at each start. Every 10 s this duty renews the live
registration of the workflows in this supervisor's registry
(:func:`redflow_mp.sync.renew_registration`: one record per app and module set,
which a sync reads before it withdraws anything), so a registration goes stale
only once no running supervisor of the app has the workflow.

Cost: one ``PEXPIRE`` and one ``SADD`` per tick, whatever the number of
workflows; the names are written again only when the record is gone (expired
during an outage, deleted, a FLUSHALL), so it comes back within one tick.

Every :data:`WITHDRAW_EVERY` seconds it also withdraws the app's stale
registrations of workflows no running supervisor of the app loads any more
(:func:`redflow_mp.sync.withdraw_stale`, the start-up sync's rules): a deploy
that drops a workflow restarts every host within 30 s of the previous
process's last renewal, so no start-up sync finds it stale, and its metadata
and cron entries stayed (the cron fired runs of a workflow no one had) until
the next deploy. Cost when nothing is stale: one ``SSCAN`` page of the app's
index (``app-wfs:<app>``) a minute, per shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.registry import Registry
from redflow_mp.sync import (
    REFRESH_INTERVAL_MS,
    registration_digest,
    renew_registration,
    withdraw_stale,
)

__all__ = ["WITHDRAW_EVERY", "RegistrationDuty"]

#: How often (s) a running supervisor withdraws its app's stale registrations.
WITHDRAW_EVERY = 60.0

log = logging.getLogger("redflow_supervisor")


class RegistrationDuty:
    name = "registration"

    def __init__(
        self, client: Client, registry: Callable[[], Registry], app: Callable[[], str]
    ) -> None:
        self.client = client
        self.registry = registry  # the current one (a HUP replaces it)
        self.app = app
        self.written = 0  # how many times the record was (re)written
        self._for: tuple[Registry, str] | None = None
        self._names: list[str] = []
        self._digest = ""
        self._next_withdraw: float | None = None  # (the start-up sync just did it)

    def tick(self, now: float) -> float:
        registry, app = self.registry(), self.app()
        if self._for is None or self._for[0] is not registry or self._for[1] != app:
            # names and digest once per registry (a HUP), not per tick
            self._names = sorted(wf.name for wf in registry.list())
            self._digest = registration_digest(app, self._names)
            self._for = (registry, app)
        if renew_registration(self.client, self._names, app=app, digest=self._digest):
            # (the supervisor's start-up writes it first: startup.register_live)
            if self.written or self._next_withdraw is not None:
                log.info(
                    "the live registration of app %r (%d workflows) was gone from Redis; "
                    "written again",
                    app,
                    len(self._names),
                )
            self.written += 1
        if self._next_withdraw is None:
            self._next_withdraw = now + WITHDRAW_EVERY
        elif now >= self._next_withdraw:
            self._next_withdraw = now + WITHDRAW_EVERY
            # (an error is the schedule's to log; the next try is a minute later)
            withdraw_stale(self.client, self._names, app=app)
        return now + REFRESH_INTERVAL_MS / 1000
