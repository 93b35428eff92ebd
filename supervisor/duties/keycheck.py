"""Look for keys shared by many runs that hold another type of value than
redflow-mp writes there (written by hand or by another program into the
prefix), every :data:`~redflow_mp.keycheck.CHECK_S`, and name each one in an
ERROR line: the key, the type found and expected, what it costs, what to do.

The scripts never fail half-way on such a key (a listing index is skipped, a
set that places a run is written first), so without this check an index of
the wrong type would only show as runs missing from a listing. Cost: one
pipeline of ``TYPE`` per shard (prefix-wide keys, five per workflow served,
three per queue served) a minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.keycheck import CHECK_S, expected_types, wrong_types
from redflow_mp.maintenance import stores

__all__ = ["KeyCheckDuty"]

log = logging.getLogger("redflow_supervisor")


class KeyCheckDuty:
    name = "keycheck"

    def __init__(
        self,
        client: Client,
        workflows: Sequence[str] | Callable[[], Sequence[str]],
        queues: Callable[[], tuple[str, ...]] = tuple,
        interval: float = CHECK_S,
    ) -> None:
        self.client = client
        # the names, or how to read them now (a HUP reload changes the registry)
        self._workflows = workflows
        self.queues = queues
        self.interval = interval
        self.found: list[str] = []  # the keys named by the last check

    @property
    def workflows(self) -> tuple[str, ...]:
        names = self._workflows() if callable(self._workflows) else self._workflows
        return tuple(names)

    def tick(self, now: float) -> float:
        found = []
        queues = self.queues()
        for store in stores(self.client):
            try:
                wrong = wrong_types(store.redis, expected_types(store.keys, self.workflows, queues))
            except TRANSIENT_ERRORS:
                continue
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
        self.found = found
        return now + self.interval
