"""The stop deadline of the arbiter, kept by an interval timer (``ITIMER_REAL``).

A drain (TERM) must end within ``graceful_timeout`` + ``kill_grace`` whatever Redis
does. The arbiter's loop cannot keep that bound by itself: it is single-threaded and
each of its Redis calls may block for 20-40 s while Redis is stalled (the socket
timeout and its retries), so a deadline looked at once per loop turn came round only
when Redis answered again. The timer does not depend on the loop turning:

- at ``graceful_timeout`` its SIGALRM handler SIGKILLs every child still alive
  (marked ``stop_sent = "kill"``: their runs go back uncharged, as before);
- ``kill_grace`` later, if the parent has still not exited, the handler raises
  :class:`DrainOverrun` out of whatever the parent is blocked in (a Redis call). The
  arbiter then exits without more Redis calls: the runs it could not put back keep
  their leases, which lapse (``lease_ms``), and a reaper puts them back, as after a
  parent killed outright.

The clock is armed when the signal arrives (:meth:`DrainClock.install` puts its
handler on TERM, INT and QUIT), not when the loop dispatches it: a TERM received
while the parent is blocked in a Redis call was seen by the loop only once the call
gave up (9 s later in a test), and the bound counts from the TERM. A first TERM
arms ``graceful_timeout``; a fast stop (INT, QUIT, a second TERM) arms
:data:`FAST_STOP_S`, the time its SIGQUIT leaves the children. The arbiter arms it
too when it drains by itself (a FATAL slot); arming again only brings the kill
closer. The stop handlers also keep the signal pipe's role: the C-level handler
writes the signal's number to the wakeup fd, and the loop dispatches it as before.

Invariants: the handler never logs and never touches Redis; it acts only once its
deadline has passed (an ALRM sent by ``kill`` is ignored, and the timer re-armed for
the time left) and only in the process that armed it (a forked helper inherits the
handler, not the timer). It raises only while :meth:`DrainClock.may_raise` allows it.

Fork safety: no thread; the arbiter forks no worker once the clock is armed, and
SIGALRM is among the signals blocked around ``os.fork`` (``signals.blocked``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

from .children import Child, count_children

__all__ = ["FAST_STOP_S", "DrainClock", "DrainOverrun"]

log = logging.getLogger("redflow_supervisor")

#: How long a fast stop (INT, QUIT, a second TERM) leaves the children before SIGKILL.
FAST_STOP_S = 2.0


class DrainOverrun(BaseException):
    """The drain's bound passed with the parent still blocked; a ``BaseException``
    so that no ``except Exception`` around a Redis call swallows it."""


class DrainClock:
    """One owner: the SIGALRM timer of a drain or a fast stop."""

    def __init__(self, children: Callable[[], Iterable[Child]]) -> None:
        self._children = children
        self._pid = 0
        self._owner = 0
        self._timing: Callable[[], tuple[float, float]] = lambda: (30.0, 5.0)
        self._kill_at: float | None = None
        self._give_up_at: float | None = None
        self._previous: Any = None
        self.killed: int | None = None  # children the timer SIGKILLed (None: not fired)
        self.drain = True  # False once a fast stop armed the clock
        self.overrun = False

    def install(self, timing: Callable[[], tuple[float, float]]) -> None:
        """Arm at the arrival of TERM, INT or QUIT; ``timing`` gives the current
        ``(graceful_timeout, kill_grace)`` (a reload may change them)."""
        self._owner = os.getpid()
        self._timing = timing
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_stop)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner:  # a forked helper inherits the handler
            return
        graceful, kill_grace = self._timing()
        if signum == signal.SIGTERM and not self.armed:
            self.arm(graceful, kill_grace)
        else:
            self.arm(FAST_STOP_S, kill_grace, drain=False)

    @property
    def armed(self) -> bool:
        return self._give_up_at is not None

    def arm(self, stop_in: float, kill_grace: float, *, drain: bool = True) -> None:
        """Kill the children in ``stop_in`` s; give up ``kill_grace`` s later.
        Arming again (a fast stop during a drain) only ever brings the kill closer,
        and never moves the bound of a kill already done."""
        now = time.monotonic()
        kill_at = now + max(stop_in, 0.0)
        if self.armed and (self._kill_at is None or self._kill_at <= kill_at):
            return
        self.drain = drain
        if self._previous is None:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._pid = os.getpid()
        self._kill_at = kill_at
        self._give_up_at = kill_at + max(kill_grace, 0.0)
        self._set(kill_at - now)

    def disarm(self) -> None:
        """Stop the timer and restore the previous SIGALRM handler."""
        self._give_up_at = None
        self._kill_at = None
        if self._previous is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)
        self._previous = None

    @contextlib.contextmanager
    def may_raise(self) -> Iterator[None]:
        """Run the body (the parent's last Redis calls) until the bound at most."""
        try:
            yield
        except DrainOverrun:
            self.overrun = True

    @staticmethod
    def _set(seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid or self._give_up_at is None:
            return
        now = time.monotonic()
        if self._kill_at is not None:
            if now < self._kill_at:
                self._set(self._kill_at - now)  # a stray ALRM
                return
            self._kill_at = None
            self.killed = self.kill_all()
            self._set(self._give_up_at - now)
            return
        if now < self._give_up_at:
            self._set(self._give_up_at - now)
            return
        self.overrun = True
        self._set(0.5)  # and again, should an ``except BaseException`` swallow it
        raise DrainOverrun

    def kill_all(self) -> int:
        """SIGKILL every child still alive; how many were signalled."""
        n = 0
        for child in list(self._children()):
            child.stop_sent = "kill"
            child.kill_at = None
            n += child.signal(signal.SIGKILL)
        return n

    def abandon(self, wait: float = 1.0) -> None:
        """After an overrun: kill what is left and reap it for up to ``wait`` s (a
        child in uninterruptible sleep is left to init), with no Redis call: the
        arbiter's own reaping would put runs back, and Redis does not answer."""
        self.disarm()
        self.kill_all()
        pids = {child.pid for child in self._children()}
        one = len(pids) == 1
        log.error(
            "%s reached and %s %.1f s later still blocked (Redis not answering): "
            "exiting; %s stopped (SIGKILL) %s not put back: %s and a reaper takes them",
            "graceful timeout" if self.drain else "fast stop deadline",
            "kill_grace",
            self._timing()[1],
            count_children(len(pids)),
            "is" if one else "are",
            "its run's lease lapses" if one else "their runs' leases lapse",
        )
        end = time.monotonic() + wait
        while pids and time.monotonic() < end:
            for pid in list(pids):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                except ChildProcessError:
                    pass
                pids.discard(pid)
            time.sleep(0.01)
