"""The arbiter's periodic duties. Each exposes ``tick(now) -> next_due`` (monotonic
seconds) and calls the library (:mod:`redflow_mp.maintenance`,
:mod:`redflow_mp.recovery`), so all Redis semantics stay there.

:class:`Schedule` runs the duties that are due from the arbiter's loop and
catches their errors (a Redis outage must never stop the arbiter): a failed
duty is retried a second later. Redis trouble (``TRANSIENT_ERRORS``: the network,
OOM, a read-only server, BUSY, CLUSTERDOWN) is one outage for all duties, logged
by one :class:`~redflow_mp.outage.Outage`: the first failure once (the error's
class and the duty), then at most one line a minute (the count, every duty
affected so far), and one "recovered after N s" line once every failing duty went
through again (during an outage each pass used to log one line per duty: about
14 lines every 10 s). Other errors (a key of another type, a bug) are logged per
duty, at most every 10 s. A
pass stops early, the duties left still due for the next one, when a signal waits
(``interrupted``) or after a duty failed for the network (a stalled or unreachable
Redis: every further call would block as long, a socket timeout or two each, while
the loop's signals, children's exits and run timeouts wait: with Redis stopped, a
TTIN took more than a minute). The next pass starts after the duty it stopped at,
so that one failing duty (a shard down) starves no other.

While Redis is known out of reach (:attr:`Schedule.down`), a pass first asks
``probe`` (the arbiter's: a PING of each server bounded by 0.5 s,
``supervisor/probe.py``); when no server answers, no duty is called and the due
ones wait a second, as after a failure. Each pass used to call one duty, which
blocked its socket timeouts (about 10 s) while Redis stalled: the loop's slot
restarts (a child that died before it was ready, due after its backoff) and
exits waited that long. A partial outage (one shard's master of a cluster) is
not gated: the duties cover the shards that answer, and a call to the stalled
one still blocks. Within a duty's tick a stalled server is called once, its other
shards skipped (:mod:`supervisor.duties.shards`, the duty's ``stalls``); a
stall the duty swallowed (a page left for the next tick) stops the pass and
arms the gate all the same, so an outage costs one call's timeouts before the
gate arms however many shards the server holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from redflow_mp.errors import NETWORK_ERRORS, TRANSIENT_ERRORS
from redflow_mp.outage import Outage

from .shards import ServerStalls

__all__ = ["Duty", "Schedule"]

log = logging.getLogger("redflow_supervisor")

_LOG_EVERY = 10.0
#: The longest the schedule stays silent while an outage lasts (s).
OUTAGE_REPEAT_S = 60.0


class Duty(Protocol):
    name: str

    def tick(self, now: float) -> float:
        """Do the work that is due; return when to be called next (monotonic)."""


class Schedule:
    """Duties with their next due times; :meth:`run` ticks the ones that are due."""

    def __init__(
        self,
        duties: list[Duty] | None = None,
        on_error: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        self._due: list[tuple[Duty, float]] = [(d, 0.0) for d in duties or ()]
        self._start = 0  # where the next pass begins (after an early stop)
        self._down = False  # the last duty run failed for the network
        self._last_error: dict[str, float] = {}
        self._on_error = on_error  # after each failed tick (the reaper's stall guard)
        self._probe = probe  # while down: whether Redis answers now (short-bounded)
        self._clock = clock
        self._outage = Outage(log, "running duties", OUTAGE_REPEAT_S, clock, name_class=True)
        self._failing: list[str] = []  # duties failed for Redis trouble, not gone through since
        self._affected: list[str] = []  # every duty failed during the current outage

    @property
    def down(self) -> bool:
        """Redis known out of reach: the last duty run failed for the network, or a
        duty failed for Redis trouble has not gone through since (a duty that calls
        no Redis, run meanwhile, does not end it)."""
        return self._down or bool(self._failing)

    def add(self, duty: Duty) -> None:
        self._due.append((duty, 0.0))

    def next_due(self) -> float:
        return min((due for _, due in self._due), default=float("inf"))

    def run(self, now: float, interrupted: Callable[[], bool] | None = None) -> None:
        """Tick the duties due at ``now``, in order from where the last pass stopped;
        stop early when ``interrupted()`` or after a duty's network failure."""
        n = len(self._due)
        if self.down and self._probe is not None and self._unanswered(now):
            return
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
            error: Exception | None = None
            stalls = _stalls_of(duty)
            if stalls is not None:
                stalls.clear()  # a tick that returns early met no stall (not the last one's)
            try:
                next_due = duty.tick(now)
            except Exception as exc:
                error = exc
            stall = stalls.error if stalls is not None else None
            if stall is not None and (error is None or _refusal(error)):
                error = stall  # a stalled server, swallowed or behind another shard's error
                # due again in a second, as after a raised one, not at the duty's own
                # cadence: until it goes through, the schedule is down (a minute for
                # the key check), which holds the dead children's put-backs
                next_due = now + 1.0
            if error is None:
                self._last_error.pop(duty.name, None)
                self._through(duty.name)
            else:
                self._failed(duty.name, error)
                if self._on_error is not None:
                    self._on_error()
                if isinstance(error, NETWORK_ERRORS):
                    self._due[i] = (duty, next_due)
                    self._start, self._down = (i + 1) % n, True
                    return
            self._due[i] = (duty, next_due)
            self._down = False
        self._start = 0

    def _unanswered(self, now: float) -> bool:
        """Redis known out of reach: whether the probe finds it still so (then the
        duties due wait a second, none called: each would block its timeouts)."""
        due = [i for i, (_, at) in enumerate(self._due) if now >= at]
        if not due or self._probe is None or self._probe():
            return False
        for i in due:
            self._due[i] = (self._due[i][0], now + 1.0)
        if self._on_error is not None:
            self._on_error()  # this process ran: a gap that follows is Redis's
        return True

    def _failed(self, name: str, exc: Exception) -> None:
        if isinstance(exc, TRANSIENT_ERRORS):
            if name not in self._failing:
                self._failing.append(name)
            if name not in self._affected:
                self._affected.append(name)
            self._outage.what = _running(self._affected)
            self._outage.failed(exc)
            return
        self._through(name)  # Redis answered (refused): that duty's outage is over
        now = self._clock()
        if now - self._last_error.get(name, 0.0) > _LOG_EVERY:
            log.warning("%s duty failed: %s", name, exc)
            self._last_error[name] = now

    def _through(self, name: str) -> None:
        """``name`` went through: the outage is over once no duty fails any more."""
        if name in self._failing:
            self._failing.remove(name)
            if not self._failing:
                self._outage.what = _running(self._affected)
                self._outage.recovered()
                self._affected.clear()


def _stalls_of(duty: Duty) -> ServerStalls | None:
    """The servers a duty's tick met stalled (``shards.py``), if it keeps them."""
    stalls = getattr(duty, "stalls", None)
    return stalls if isinstance(stalls, ServerStalls) else None


def _refusal(exc: Exception) -> bool:
    """Redis trouble other than the network (READONLY, OOM, BUSY ...)."""
    return isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, NETWORK_ERRORS)


def _running(names: list[str]) -> str:
    return f"running duties {', '.join(names)}" if len(names) > 1 else f"running duty {names[0]}"
