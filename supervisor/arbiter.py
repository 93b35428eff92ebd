"""The arbiter: the supervisor's single-threaded parent loop.

One iteration: wait for a signal, a metrics event or the next deadline (at most 1 s;
``wakeup.py``), dispatch signals to ``handle_<name>``, reap children, watch the live ones
(readiness, run timeouts, kill deadlines), refill slots, run the duties that are due (``duties/``:
lease backstop, memory, leader, cron, promoter, reaper, retention, relist, cascades...).

The arbiter decides *when*; the library decides *what*: putting back a dead child's runs, recording
a timeout or an ignored cancellation (``aftermath.py``), renewing leases (``duties/backstop.py``)
are :mod:`redflow_mp.recovery` calls, fenced by the lease tokens read from the shared board.

Invariants:
- The parent never runs threads (fork safety); every wait is the select on the signal pipe.
- When a child dies holding runs (read from the shared board), those runs go back to
  ``ready`` at once; the run it was executing is charged a crash (``max_run_crashes``
  turns a poison pill into a failed run) unless the supervisor stopped it.
- The lease of every run a live child holds is kept, even while that child is
  being aborted, until the child is reaped.
- A dead child's put-backs wait in a queue (``aftermath.py``), sent only once a short-bounded
  PING finds their shard's server answering (a stalled shard holds only its own);
  kept and sent again (same lease tokens) after transient trouble.
- A Redis outage never stops the arbiter: duties log and retry; a pass of the duties stops
  after a network failure (each call blocks its timeouts) so signals and exits wait one call.
- A stop's bound (``graceful_timeout`` + ``kill_grace``) is kept by ``drainclock.py``'s
  timer, not by the loop, whose Redis calls may block while Redis stalls.
"""

from __future__ import annotations

import logging
import os
import time

from redflow_mp import hookdue
from redflow_mp.client import Client
from redflow_mp.metrics import Labels
from redflow_mp.transport import mask_url

from .aftermath import Aftermath
from .arbiterstate import Mode, Reloaded, Slot
from .child import set_title
from .drainclock import DrainOverrun
from .duties import Schedule
from .duties.backstop import BackstopDuty
from .duties.cascades import CascadeDuty
from .duties.cron import CronDuty
from .duties.keycheck import KeyCheckDuty
from .duties.leader import LeaderDuty
from .duties.memory import MemoryDuty
from .duties.promoter import PromoterDuty
from .duties.reaper import ReaperDuty
from .duties.registration import RegistrationDuty
from .duties.registry import RegistryDuty
from .duties.relist import RelistDuty
from .duties.retention import RetentionDuty
from .duties.status import StatusDuty, gauges, supervisor_status
from .metrics import MetricsHub, build_info, process_samples
from .restart import RestartState, SlotTracker
from .signals import SignalPipe
from .slots import ChildKeeping
from .startup import connect, end_of_startup, resolve_queues
from .status import SupervisorStatus
from .wakeup import Wakeup

__all__ = ["Arbiter", "Reloaded"]

log = logging.getLogger("redflow_supervisor")

# Seconds after a fork while a booting child's entry is polled every 20 ms (then 250 ms).
_BOOT_POLL_FAST_FOR = 2.0


class Arbiter(ChildKeeping):
    """Forks and supervises the children; runs the leader duties.

    The layers below hold the rest: ``arbiterstate.py`` (state), ``handlers.py``
    (signals), ``slots.py`` (children)."""

    def _build_duties(self, client: Client) -> None:
        s = self.settings
        self.leader = LeaderDuty(client, s.cron_lock_ttl_ms)
        store = self.hub.store if self.hub is not None else None
        self.status = StatusDuty(client, self._snapshot)
        reaper = ReaperDuty(
            client,
            s.reaper_interval_ms,
            metrics=store,
            queues=lambda: self.queues,
            lease_ms=s.lease_ms,
            # none taken over while draining: the helper would outlive the supervisor
            hooked=lambda: hookdue.hooked(self.registry) if self.mode is Mode.RUNNING else (),
            take_over=self._take_over_hook,
        )
        self.schedule = Schedule(
            [
                BackstopDuty(
                    client,
                    self.board,
                    self.children.values,
                    s.lease_ms,
                    s.cancel_grace,
                    self._abort,
                ),
                MemoryDuty(self.board, self.children.values, s.max_memory_per_child),
                self.leader,
                CronDuty(client, self.leader, metrics=store),
                PromoterDuty(client, s.promoter_interval_ms, metrics=store),
                reaper,
                RetentionDuty(client, s.run_retention, self.leader, queues=lambda: self.queues),
                RelistDuty(client, self.leader),
                CascadeDuty(client, self.leader),
                KeyCheckDuty(client, lambda: [w.name for w in self.registry], lambda: self.queues),
                RegistrationDuty(client, lambda: self.registry, lambda: self.settings.app),
                RegistryDuty(client, lambda: self.registry, s.app),
                self.status,
            ],
            on_error=reaper.guard.failed,  # a failed call: this process ran (no stop)
            probe=self._redis_answers,  # while Redis is out of reach: no duty blocks
        )

    def _redis_answers(self) -> bool:
        return self.aftermath is None or self.aftermath.probe.any_answers()

    def _take_over_hook(self, run_id: str) -> None:
        """Call the ``on_failure`` hook of ``run_id``, taken over by the reaper,
        in a helper process (as for a run the supervisor failed itself)."""
        self.helpers.start(self._child_spec(-1, 0), self.registry, run_id)

    def _snapshot(self) -> SupervisorStatus:
        return supervisor_status(
            sid=self.id,
            app=self.settings.app,
            started_ms=self.started_ms,
            mode=self.mode.value,
            leader=bool(self.leader and self.leader.is_leader),
            queues=self.queues,
            procs=self.target,
            children=list(self.children.values()),
            board=self.board,
            restarts=self.restarts,
            sampler=self.sampler,
        )

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Run until drained or stopped; returns the process exit status."""
        self.queues = resolve_queues(self.settings, self.registry)
        self.registry.freeze()
        self.client = connect(self.settings, self.registry, self.queues)
        self.pipe = SignalPipe()
        self.clock.install(lambda: (self.settings.graceful_timeout, self.settings.kill_grace))
        self.hub = MetricsHub(self._gauges, self.settings.metrics_max_workflows, self.registry)
        self.wakeup = Wakeup(self.pipe, self.hub)
        self.aftermath = Aftermath(
            self.client,
            self.helpers,
            lambda: self._child_spec(-1, 0),
            self.hub.store,
            known_down=lambda: self.schedule.down,
        )
        if self.settings.metrics_port:
            self.wakeup.serve_metrics(self.settings.metrics_host, self.settings.metrics_port)
        self._build_duties(self.client)
        set_title(f"{self.title} master")
        log.info(
            "supervisor starting: app=%s procs=%d queues=%s redis=%s prefix=%s",
            self.settings.app,
            self.target,
            ",".join(self.queues),
            mask_url(self.settings.url),
            self.settings.prefix,
        )
        for slot in range(1, self.target + 1):
            self.slots[slot] = Slot(SlotTracker(self._policy()))
        end_of_startup()
        skipped = False
        try:
            while True:
                now = time.monotonic()
                self._reconcile(now)
                if self.mode is not Mode.RUNNING and not self.children:
                    break
                timeout = self._next_wakeup(now) - time.monotonic()
                assert self.wakeup is not None and self.pipe is not None
                signals = self.wakeup.wait(timeout)
                for signum in signals:
                    self._on_signal(signum)
                self._reap()
                now = time.monotonic()
                self._watch(now)
                if self.aftermath is not None:  # dead children's runs Redis did not take yet
                    self.aftermath.work(self.pipe.waiting)
                if not signals or skipped:  # first what they asked; never two skips
                    self._reconcile(time.monotonic())  # slot restarts due: before a duty call
                    self.schedule.run(now, self.pipe.waiting)
                skipped = bool(signals) and not skipped
        except DrainOverrun:
            self.clock.abandon()
        finally:
            self._shutdown()
        log.info("supervisor stopped (exit status %d)", self.exit_code)
        return self.exit_code

    def _next_wakeup(self, now: float) -> float:
        wake = min(now + 1.0, self.schedule.next_due())
        for slot in self.slots.values():
            if slot.pid is None and slot.tracker.state is RestartState.BACKOFF:
                wake = min(wake, slot.tracker.restart_at)
        for child in self.children.values():
            if child.kill_at is not None:
                wake = min(wake, child.kill_at)
            if not child.ready:
                # Look at the board often while a child boots, then less (a child
                # waiting out a Redis outage may take minutes to become ready).
                booting = now - child.started_at < _BOOT_POLL_FAST_FOR
                wake = min(wake, now + (0.02 if booting else 0.25))
        if self.aftermath is not None:
            wake = min(wake, self.aftermath.next_due())
        if self.hub is not None:
            hub_wake = self.hub.next_due()
            if hub_wake is not None:
                wake = min(wake, hub_wake)
        return max(wake, now + 0.001)

    def _gauges(self) -> list[tuple[str, Labels, float]]:
        # One series per slot (its current process): a rolling restart never repeats labels.
        current = [(f"worker-{n}", s.pid) for n, s in sorted(self.slots.items()) if s.pid]
        return [
            *gauges(self.client, self.registry, len(self.children), self.queues, self._run_queues),
            build_info(),
            *process_samples([("master", os.getpid()), *current]),
        ]

    def _shutdown(self) -> None:
        with self.clock.may_raise():  # Redis calls end by the drain's bound at the latest
            if self.aftermath is not None and not self.clock.overrun:
                self.aftermath.finish()  # the put-backs Redis did not take yet: once more
            if self.status is not None and not self.clock.overrun:
                try:
                    self.status.remove()
                except Exception as exc:  # pragma: no cover - best effort on exit
                    log.debug("could not remove the status record: %s", exc)
            if self.leader is not None and not self.clock.overrun:
                try:
                    self.leader.resign()
                except Exception as exc:  # pragma: no cover - best effort on exit
                    log.warning("could not release the cron leader lock: %s", exc)
        self.clock.disarm()
        if self.aftermath is not None:
            self.aftermath.finish(send=False)  # after an overrun: only say what is left
        if self.hub is not None:
            self.hub.read_pipe()
            self.hub.shutdown()
        if self.wakeup is not None:
            self.wakeup.close()
        if self.client is not None:
            self.client.close()
        if self.pipe is not None:
            self.pipe.close()
        self.board.close()
