"""The arbiter's state: what the supervisor's parent knows, and the helpers every part uses.

:class:`ArbiterState` holds the slots, the live children, the shared board, the mode
(running, draining, stopping) and the handles the loop opens in ``run`` (signal pipe,
client, metrics hub). The arbiter is built in layers, each a class of its own module:
this state, the signal handlers (``handlers.py``), the slots' children (``slots.py``:
fork, reap, watch) and the loop itself (``arbiter.py``).

Fork safety: parent only; it starts no threads (the parent never runs threads at fork time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import redis

from redflow_mp.admin import RunQueues
from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.hookdue import HOOK_LIMIT_S
from redflow_mp.ids import new_token
from redflow_mp.maintenance import wake_workers
from redflow_mp.registry import Registry

from .aftermath import Aftermath
from .board import Board
from .children import Child, Helpers
from .cpulimit import ParentLimit
from .drainclock import DrainClock
from .duties import Schedule
from .duties.leader import LeaderDuty
from .duties.status import ProcessSampler, StatusDuty, supervisor_id
from .liveness import StallWatch
from .metrics import MetricsHub
from .restart import RestartPolicy, SlotTracker
from .settings import Settings
from .signals import SignalPipe
from .wakeup import Wakeup

__all__ = ["ON_FAILURE_LIMIT", "ArbiterState", "Mode", "Reloaded", "Slot"]

log = logging.getLogger("redflow_supervisor")

#: What ringing the bells may meet (best effort): transient trouble, and any refusal.
_BELL_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, redis.RedisError)

# How long an on_failure hook may run (in a child or a helper) before it is killed:
# before its deadline in on-failure-due (hookdue.HOOK_GRACE_MS), so a hook still
# running is never taken over.
ON_FAILURE_LIMIT = HOOK_LIMIT_S


class Mode(Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass(slots=True)
class Slot:
    tracker: SlotTracker
    pid: int | None = None
    pending: int | None = None


@dataclass(frozen=True, slots=True)
class Reloaded:
    settings: Settings
    registry: Registry


class ArbiterState:
    """The supervisor parent's state, shared by the arbiter's layers."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        reload: Callable[[], Reloaded] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._reload = reload
        self.mode = Mode.RUNNING
        self.exit_code = 0
        self.generation = 0
        self.target = settings.effective_procs
        self.slots: dict[int, Slot] = {}
        self.children: dict[int, Child] = {}
        self.helpers = Helpers(ON_FAILURE_LIMIT)
        capacity = max(256, self.target * 2 + 16)
        self.board = Board(capacity)
        self.free_entries = list(range(capacity - 1, -1, -1))
        self.pipe: SignalPipe | None = None
        self.client: Client | None = None
        self.schedule = Schedule()
        self.leader: LeaderDuty | None = None
        self.clock = DrainClock(self.children.values)  # graceful_timeout + kill_grace
        self.queues: tuple[str, ...] = ()
        self.title = f"redflow-supervisor[{settings.app}]"
        self.id = supervisor_id()
        # the wake key of this supervisor's children (worker-wake:<token>, every shard)
        self.wake_token = new_token()
        self.started_ms = int(time.time() * 1000)
        self.sampler = ProcessSampler()
        self.cpu_limit = ParentLimit()
        self.status: StatusDuty | None = None
        self.restarts: dict[int, int] = {}
        self.hub: MetricsHub | None = None
        self._run_queues = RunQueues()  # queues of running runs seen by earlier scrapes
        self.wakeup: Wakeup | None = None
        self.aftermath: Aftermath | None = None
        self.stalls = StallWatch(self.board, settings.lease_ms, self._count)

    def _policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(
            base=s.restart_backoff,
            cap=s.restart_backoff_max,
            max_start_failures=s.max_start_failures,
        )

    def _count(self, name: str, **labels: str) -> None:
        if self.hub is not None:
            self.hub.store.inc(name, 1.0, **labels)

    def _out_of_reach(self) -> bool:
        """Redis known out of reach (``Schedule.down``) and the probe (0.5 s) finds
        it still so: a best-effort call from a signal's handling (the bells, the
        cron leader's resignation) is skipped, rather than block the loop its
        socket timeouts (a TTOU during an outage took 20.8 s, per shard)."""
        return (
            self.schedule.down
            and self.aftermath is not None
            and not self.aftermath.probe.any_answers()
        )

    def _ring_bells(self) -> None:
        """Wake idle children blocked on their queues so they see TERM at once
        (skipped while Redis is out of reach: they see the SIGTERM sent too)."""
        if self.client is None or not self.children or self._out_of_reach():
            return
        try:
            wake_workers(self.client, self.wake_token, len(self.children))
        except _BELL_TROUBLE as exc:
            # Best effort: an idle child sees the request at the end of its blocking
            # read. A plain command's refusal (OOM at maxmemory, READONLY, MISCONF,
            # WRONGTYPE on a bell) is redis-py's raw error, not a transient one, and
            # ended the parent in a traceback in the middle of a HUP or a drain.
            log.debug("could not wake idle children: %s", exc)

    def _retire(self, child: Child) -> None:
        child.retiring = True
        if child.ask_to_stop(self.board):
            self._ring_bells()
