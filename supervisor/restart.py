"""Per-slot restart policy (pure; the clock is passed in).

States follow supervisord: STARTING (forked, not ready yet), RUNNING (the child
reported ready), BACKOFF (waiting before the next start), FATAL (gave up).

- A *start failure* is a child that exits before it reports ready (import,
  config, connection). Consecutive start failures back off
  ``min(cap, base * 2**(n-1))`` with jitter; at ``max_start_failures`` the slot
  goes FATAL and the supervisor exits non-zero.
- A child that dies after it was ready is restarted at once; only a burst of
  such deaths (``burst`` within ``window`` seconds) backs off, and never goes
  FATAL: a run that kills its child is the run's problem (counted against the
  run by ``max_run_crashes``), not the slot's.
- A planned exit (recycling, drain, rolling restart) restarts at once and
  counts as nothing.
- A fork that fails (EAGAIN at a process limit, ENOMEM) backs off like a start
  failure but never goes FATAL: the limit is the host's, and it passes; the
  supervisor and its other children go on.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["RestartPolicy", "RestartState", "SlotTracker"]


class RestartState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    base: float = 1.0
    cap: float = 30.0
    max_start_failures: int = 5
    burst: int = 5
    window: float = 10.0
    jitter: float = 0.1

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        raw = float(min(self.cap, self.base * (2 ** max(0, failures - 1))))
        if self.jitter and raw > 0:
            raw *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw)


@dataclass(slots=True)
class SlotTracker:
    """The restart bookkeeping of one slot."""

    policy: RestartPolicy
    state: RestartState = RestartState.BACKOFF
    start_failures: int = 0
    restart_at: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    fork_failures: int = 0

    def spawned(self) -> None:
        self.state = RestartState.STARTING
        self.fork_failures = 0

    def fork_failed(self, now: float) -> float:
        """The fork of this slot's next child failed; returns the delay before the
        next try (the slot's running child, during a rolling restart, goes on)."""
        self.fork_failures += 1
        delay = self.policy.delay(self.fork_failures)
        self.state = RestartState.BACKOFF
        self.restart_at = now + delay
        return delay

    def ready(self) -> None:
        self.state = RestartState.RUNNING
        self.start_failures = 0

    def exited(self, now: float, *, was_ready: bool, planned: bool) -> RestartState:
        """Record an exit; returns the new state (BACKOFF with ``restart_at``, or FATAL)."""
        if planned:
            self.state = RestartState.BACKOFF
            self.restart_at = now
            return self.state
        if not was_ready:
            self.start_failures += 1
            if self.start_failures >= self.policy.max_start_failures:
                self.state = RestartState.FATAL
                return self.state
            self.state = RestartState.BACKOFF
            self.restart_at = now + self.policy.delay(self.start_failures)
            return self.state
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.policy.window:
            self.crashes.popleft()
        self.state = RestartState.BACKOFF
        if len(self.crashes) >= self.policy.burst:
            self.restart_at = now + self.policy.delay(len(self.crashes) - self.policy.burst + 1)
        else:
            self.restart_at = now
        return self.state

    def due(self, now: float) -> bool:
        return self.state is RestartState.BACKOFF and now >= self.restart_at
