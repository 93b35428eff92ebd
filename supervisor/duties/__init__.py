"""The arbiter's periodic duties. Each exposes ``tick(now) -> next_due`` (monotonic
seconds) and calls the library (:mod:`redflow_mp.maintenance`,
:mod:`redflow_mp.recovery`), so all Redis semantics stay there.

:class:`Schedule` runs the duties that are due from the arbiter's loop and
catches their errors (a Redis outage must never stop the arbiter): a failed
duty is retried a second later, and its failure logged at most every 10 s. A
pass stops early, the duties left still due for the next one, when a signal waits
(``interrupted``) or after a duty failed for the network (a stalled or unreachable
Redis: every further call would block as long, a socket timeout or two each, while
the loop's signals, children's exits and run timeouts wait: with Redis stopped, a
TTIN took more than a minute). The next pass starts after the duty it stopped at,
so that one failing duty (a shard down) starves no other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from redflow_mp.errors import NETWORK_ERRORS

__all__ = ["Duty", "Schedule"]

log = logging.getLogger("redflow_supervisor")

_LOG_EVERY = 10.0


class Duty(Protocol):
    name: str

    def tick(self, now: float) -> float:
        """Do the work that is due; return when to be called next (monotonic)."""


class Schedule:
    """Duties with their next due times; :meth:`run` ticks the ones that are due."""

    def __init__(
        self, duties: list[Duty] | None = None, on_error: Callable[[], None] | None = None
    ) -> None:
        self._due: list[tuple[Duty, float]] = [(d, 0.0) for d in duties or ()]
        self._start = 0  # where the next pass begins (after an early stop)
        self._down = False  # the last duty run failed for the network
        self._last_error: dict[str, float] = {}
        self._on_error = on_error  # after each failed tick (the reaper's stall guard)

    def add(self, duty: Duty) -> None:
        self._due.append((duty, 0.0))

    def next_due(self) -> float:
        return min((due for _, due in self._due), default=float("inf"))

    def run(self, now: float, interrupted: Callable[[], bool] | None = None) -> None:
        """Tick the duties due at ``now``, in order from where the last pass stopped;
        stop early when ``interrupted()`` or after a duty's network failure."""
        n = len(self._due)
        ran = self._down  # after a network failure, a waiting signal comes first
        for k in range(n):
            i = (self._start + k) % n
            duty, due = self._due[i]
            if now < due:
                continue
            # The first due duty runs whatever waits: a steady stream of signals
            # (child exits) never stops every duty, the lease backstop included.
            if ran and interrupted is not None and interrupted():
                self._start = i
                return
            ran = True
            next_due = now + 1.0
            try:
                next_due = duty.tick(now)
                self._last_error.pop(duty.name, None)
            except Exception as exc:
                self._failed(duty.name, exc)
                if self._on_error is not None:
                    self._on_error()
                if isinstance(exc, NETWORK_ERRORS):
                    self._due[i] = (duty, next_due)
                    self._start, self._down = (i + 1) % n, True
                    return
            self._due[i] = (duty, next_due)
            self._down = False
        self._start = 0

    def _failed(self, name: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error.get(name, 0.0) > _LOG_EVERY:
            log.warning("%s duty failed: %s", name, exc)
            self._last_error[name] = now
