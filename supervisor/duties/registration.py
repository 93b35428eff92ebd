"""Keep this supervisor's registration of its workflows fresh while it runs.

A supervisor syncs its registry at start (and at HUP); a sync withdraws the
app's registration of workflows the syncing registry lacks once that is older
than 30 s. Supervisors of one app that load different modules (one host per
module set, the same ``--app``) would then remove each other's workflow
metadata and cron entries at each start. Every 10 s this duty renews the
registrations of the workflows in this supervisor's registry
(:func:`redflow_mp.sync.refresh_registrations`), so a registration goes stale
only once no running supervisor of the app has the workflow.
"""

from __future__ import annotations

from collections.abc import Callable

from redflow_mp.client import Client
from redflow_mp.registry import Registry
from redflow_mp.sync import REFRESH_INTERVAL_MS, refresh_registrations

__all__ = ["RegistrationDuty"]


class RegistrationDuty:
    name = "registration"

    def __init__(
        self, client: Client, registry: Callable[[], Registry], app: Callable[[], str]
    ) -> None:
        self.client = client
        self.registry = registry  # the current one (a HUP replaces it)
        self.app = app
        self.started = False

    def tick(self, now: float) -> float:
        if self.started:  # the start-up sync has just written them
            refresh_registrations(self.client, self.registry(), app=self.app())
        self.started = True
        return now + REFRESH_INTERVAL_MS / 1000
