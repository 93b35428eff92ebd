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
- A Redis outage never stops the arbiter: duties log and retry; a pass of the duties stops
  after a network failure (each call blocks its timeouts) so signals and exits wait one call.
- A stop's bound (``graceful_timeout`` + ``kill_grace``) is kept by ``drainclock.py``'s
  timer, not by the loop, whose Redis calls may block while Redis stalls.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import msgspec

from redflow_mp.admin import RunQueues
from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS
from redflow_mp.maintenance import ring_bells
from redflow_mp.metrics import Labels
from redflow_mp.registry import Registry
from redflow_mp.transport import mask_url

from .aftermath import Aftermath
from .board import AbortReason, Board, Held, SlotState
from .child import ChildSpec, ExitCode, set_title
from .children import (
    Child,
    ExitInfo,
    Helpers,
    count_children,
    decode_status,
    end_stuck_hook,
    fork_child,
    log_exit,
)
from .cpulimit import ParentLimit
from .drainclock import FAST_STOP_S, DrainClock, DrainOverrun
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
from .duties.status import ProcessSampler, StatusDuty, gauges, supervisor_id, supervisor_status
from .liveness import StallWatch
from .metrics import MetricsHub, build_info, process_samples
from .restart import RestartPolicy, RestartState, SlotTracker
from .settings import Settings, held_for_restart
from .signals import STRAY, SignalPipe, signal_name
from .startup import connect, end_of_startup, resolve_queues, resync
from .status import SupervisorStatus
from .wakeup import Wakeup

__all__ = ["Arbiter", "Reloaded"]

log = logging.getLogger("redflow_supervisor")

# How long an on_failure hook may run (in a child or a helper) before it is killed.
_ON_FAILURE_LIMIT = 60.0
# Seconds after a fork while a booting child's entry is polled every 20 ms (then 250 ms).
_BOOT_POLL_FAST_FOR = 2.0


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


class Arbiter:
    """Forks and supervises the children; runs the leader duties."""

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
        self.helpers = Helpers(_ON_FAILURE_LIMIT)
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

    # ------------------------------------------------------------------ setup

    def _policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(
            base=s.restart_backoff,
            cap=s.restart_backoff_max,
            max_start_failures=s.max_start_failures,
        )

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
        )

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
            self.client, self.helpers, lambda: self._child_spec(-1, 0), self.hub.store
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
                if not signals or skipped:  # first what they asked; never two skips
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

    def _count(self, name: str, **labels: str) -> None:
        if self.hub is not None:
            self.hub.store.inc(name, 1.0, **labels)

    def _shutdown(self) -> None:
        with self.clock.may_raise():  # Redis calls end by the drain's bound at the latest
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

    # ------------------------------------------------------------- signals

    def _on_signal(self, signum: int) -> None:
        """Dispatch a signal to its ``handle_<name>`` method (SIGCHLD only wakes us)."""
        name = signal_name(signum)
        if signum == signal.SIGALRM and self.clock.killed is not None:  # drainclock.py's
            what = "graceful timeout" if self.clock.drain else "fast stop deadline"
            log.warning("%s reached: stopped %d (SIGKILL)", what, self.clock.killed)
            self.clock.killed = None
            return
        if signum == signal.SIGXCPU and self.cpu_limit.reached():  # cpulimit.py
            self.exit_code = 1
            if self.mode is Mode.RUNNING:
                self._drain()
            return
        if signum in STRAY:
            log.warning("received %s; ignored (not a supervisor signal)", name)
            return
        handler = getattr(self, f"handle_{name[3:].lower()}", None)
        if name != "SIGCHLD":
            log.info("received %s", name)
        if handler is not None:
            handler()

    def handle_chld(self) -> None:
        """A child exited: the loop reaps it next (the signal only wakes the loop)."""

    def handle_term(self) -> None:
        """Graceful drain; a second TERM stops fast."""
        if self.mode is Mode.RUNNING:
            self._drain()
        else:
            self.handle_quit()

    def handle_int(self) -> None:
        self.handle_quit()

    def handle_quit(self) -> None:
        """Fast stop: children exit now, their runs go back to the queue at once."""
        self.mode = Mode.STOPPING
        self.clock.arm(FAST_STOP_S, self.settings.kill_grace, drain=False)
        log.info(
            "fast stop: stopping %s now; their runs go back to the queue",
            count_children(len(self.children)),
        )
        self._resign()
        now = time.monotonic()
        for child in self.children.values():
            if child.stop_sent != "kill":
                child.stop_sent = "quit"
                child.kill_at = now + FAST_STOP_S
                child.signal(signal.SIGQUIT)

    def handle_ttin(self) -> None:
        self._scale(+1)

    def handle_ttou(self) -> None:
        self._scale(-1)

    def _drain(self) -> None:
        self.mode = Mode.DRAINING
        self.clock.arm(self.settings.graceful_timeout, self.settings.kill_grace)
        log.info(
            "draining: waiting up to %.1f s for the runs of %s",
            self.settings.graceful_timeout,
            count_children(len(self.children)),
        )
        self._resign()
        for child in self.children.values():
            child.ask_to_stop(self.board)
        self._ring_bells()

    def _ring_bells(self) -> None:
        """Wake idle children blocked on their queues so they see TERM at once."""
        if self.client is None or not self.children:
            return
        try:
            ring_bells(self.client, self.queues, len(self.children))
        except TRANSIENT_ERRORS as exc:
            log.debug("could not wake idle children: %s", exc)

    def _resign(self) -> None:
        if self.leader is not None:
            try:
                self.leader.resign()
            except TRANSIENT_ERRORS as exc:
                log.warning("could not release the cron leader lock: %s", exc)

    def handle_hup(self) -> None:
        """Reload the config and the workflow modules; replace the children one by one."""
        if self.mode is not Mode.RUNNING:
            return
        if self._reload is not None:
            try:
                reloaded = self._reload()
            except BaseException as exc:
                log.error("reload failed; keeping the current code and settings: %s", exc)
                return
            self.settings = self._keep_running(reloaded.settings)
            self.registry = reloaded.registry
            assert self.client is not None
            try:
                self.queues = resync(self.client, self.settings, self.registry)
            except SystemExit as exc:
                log.error("%s", exc)
                return
        self.generation += 1
        log.info(
            "rolling restart: generation %d replaces %s",
            self.generation,
            count_children(len(self.slots)),
        )

    def _keep_running(self, reloaded: Settings) -> Settings:
        """``reloaded`` with the running value of each setting a reload cannot
        apply (``settings.RELOADABLE``): parent and children must agree on them."""
        kept = held_for_restart(self.settings, reloaded)
        if not kept:
            return reloaded
        log.warning(
            "reload: %s changed in the configuration; a restart applies %s "
            "(keeping the running %s)",
            ", ".join(sorted(kept)),
            "it" if len(kept) == 1 else "them",
            "value" if len(kept) == 1 else "values",
        )
        return msgspec.structs.replace(reloaded, **kept)

    def _scale(self, delta: int) -> None:
        if self.mode is not Mode.RUNNING:
            return
        if delta > 0:
            if len(self.free_entries) < 2:
                log.error("cannot add a child: the status board is full")
                return
            self.target += 1
            slot_no = max(self.slots, default=0) + 1
            self.slots[slot_no] = Slot(SlotTracker(self._policy()))
            log.info("TTIN: %s", count_children(self.target))
            return
        if self.target <= 1:
            log.info("TTOU ignored: one child is the minimum")
            return
        self.target -= 1
        slot_no = max(self.slots)
        slot = self.slots.pop(slot_no)
        for pid in (slot.pid, slot.pending):
            child = self.children.get(pid) if pid is not None else None
            if child is not None:
                self._retire(child)
        log.info("TTOU: %s", count_children(self.target))

    def _retire(self, child: Child) -> None:
        child.retiring = True
        if child.ask_to_stop(self.board):
            self._ring_bells()

    # ------------------------------------------------------------- children

    def _child_spec(self, index: int, slot_no: int) -> ChildSpec:
        s = self.settings
        assert self.pipe is not None and self.hub is not None
        return ChildSpec(
            index=index,
            slot=slot_no,
            app=s.app,
            url=s.url,
            prefix=s.prefix,
            queues=self.queues,
            lease_ms=s.lease_ms,
            max_runs=s.max_runs_per_child,
            max_payload_bytes=s.max_payload_bytes,
            max_events_per_run=s.max_events_per_run,
            max_event_bytes_per_run=s.max_event_bytes_per_run,
            redis_functions=s.redis_functions,
            cluster=s.cluster,
            sentinel_master=s.sentinel_master or None,
            durability=s.durability,
            durability_wait_ms=s.durability_wait_ms,
            shards=s.shards,
            shards_watched=self.target >= s.shards,
            close_fds=(*self.pipe.fds, *self.hub.fds_for_children()),
            metrics_fd=self.hub.write_fd,
        )

    def _spawn(self, slot_no: int, now: float) -> Child | None:
        if not self.free_entries:
            log.error("status board full; cannot start worker %d", slot_no)
            return None
        index = self.free_entries.pop()
        spec = self._child_spec(index, slot_no)
        self.board.claim_entry(index, 0)
        pid = fork_child(spec, self.board, self.registry)
        child = Child(
            pid=pid, slot=slot_no, index=index, generation=self.generation, started_at=now
        )
        self.children[pid] = child
        self.restarts.setdefault(slot_no, 0)
        log.debug("started worker %d (pid %d)", slot_no, pid)
        return child

    def _reconcile(self, now: float) -> None:
        if self.mode is not Mode.RUNNING:
            return
        rolling = any(slot.pending is not None for slot in self.slots.values())
        for slot_no, slot in sorted(self.slots.items()):
            tracker = slot.tracker
            if tracker.state is RestartState.FATAL:
                continue
            if slot.pid is None:
                if slot.pending is None and tracker.due(now):
                    child = self._spawn(slot_no, now)
                    if child is not None:
                        slot.pid = child.pid
                        tracker.spawned()
                continue
            current = self.children.get(slot.pid)
            stale = current is not None and current.generation < self.generation
            if (
                stale
                and slot.pending is None
                and not rolling
                and (tracker.state is RestartState.RUNNING or tracker.due(now))
            ):
                assert current is not None
                child = self._spawn(slot_no, now)
                if child is not None:
                    child.replaces = current.pid
                    slot.pending = child.pid
                    tracker.spawned()
                    rolling = True

    def _stopped_by_us(self, child: Child, info: ExitInfo) -> bool:
        """Whether ``child`` ended because this supervisor stopped it (its runs go
        back uncharged): a KILL or QUIT we sent, a fast stop, or a clean exit while
        draining. A child that dies during a drain by a signal we did not send (the
        OOM killer, a segfault) crashed: its run is charged like any other (it was
        put back as "supervisor stopping", losing the cause and the crash count).
        A child killed for making no progress (``liveness.py``) is charged too."""
        by_us = child.stop_sent in ("kill", "quit") and not child.stalled
        if by_us or self.mode is Mode.STOPPING:
            return True
        return self.mode is Mode.DRAINING and info.clean

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            # Signals that came before this exit first: a QUIT to the whole group
            # while we were busy ended the children, and each run was charged a crash.
            for signum in self.pipe.drain() if self.pipe is not None else ():
                self._on_signal(signum)
            if child is not None:
                self._on_exit(child, decode_status(status))
            else:
                self.helpers.reaped(pid)

    def _on_exit(self, child: Child, info: ExitInfo) -> None:
        now = time.monotonic()
        entry = self.board.read(child.index)
        if not child.ready and (info.code == ExitCode.RECYCLE or entry.served):
            child.ready = True  # it served (and left) before a board poll saw it ready
            self._on_ready(child)
        info = info.given(entry.held)  # a handler that ended its process crashed it
        we_killed = child.stop_sent == "kill" or (child.abort is not None and info.signal == 9)
        cause = info.describe(we_killed=we_killed)
        self._count("redflow_child_exits_total", cause=info.kind(we_killed=we_killed))
        if self.aftermath is not None:
            self.aftermath.child_died(
                child,
                entry,
                cause,
                registry=self.registry,
                stopping=self._stopped_by_us(child, info),
                max_crashes=self.settings.max_run_crashes,
                lease_ms=self.settings.lease_ms,
            )
        self.board.free(child.index)
        self.free_entries.append(child.index)
        log_exit(child, info, cause)
        slot = self.slots.get(child.slot)
        if slot is None:
            return
        if slot.pending == child.pid:
            slot.pending = None
            if not child.ready and self.mode is Mode.RUNNING:  # a drain stopped it: no failure
                self._after_exit(slot, child, info, now)
            return
        if slot.pid != child.pid:
            return
        slot.pid = None
        if child.replaces is not None:
            return
        if self.mode is not Mode.RUNNING or child.retiring:
            return
        if not info.clean:
            # A restart is a slot's process that died; replacements (HUP), recycling
            # and scaling are not (they exit cleanly or are retired).
            self.restarts[child.slot] = self.restarts.get(child.slot, 0) + 1
        self._after_exit(slot, child, info, now)

    def _after_exit(self, slot: Slot, child: Child, info: ExitInfo, now: float) -> None:
        planned = child.abort is not None or (child.ready and info.clean)
        state = slot.tracker.exited(now, was_ready=child.ready, planned=planned)
        if state is RestartState.FATAL:
            log.critical(
                "worker %d failed to start %d times in a row: FATAL; stopping the supervisor",
                child.slot,
                slot.tracker.start_failures,
            )
            self.exit_code = 1
            self._drain()
        elif slot.tracker.restart_at > now:
            log.warning("worker %d restarts in %.1f s", child.slot, slot.tracker.restart_at - now)

    # --------------------------------------------------------------- watching

    def _watch(self, now: float) -> None:
        self.helpers.check(now)
        for child in list(self.children.values()):
            entry = self.board.read(child.index)
            if not child.ready and entry.state in (SlotState.IDLE, SlotState.BUSY):
                child.ready = True
                self._on_ready(child)
            if child.kill_at is not None and now >= child.kill_at:
                child.kill_at = None
                child.stop_sent = "kill"
                child.signal(signal.SIGKILL)
                continue
            if child.abort is None and entry.held:
                self._check_timeout(child, entry.held, now)
            end_stuck_hook(child, entry.hook_since, now, _ON_FAILURE_LIMIT)
            self.stalls.check(child, now)

    def _on_ready(self, child: Child) -> None:
        slot = self.slots.get(child.slot)
        if slot is None:
            return
        if slot.pending == child.pid:
            old = self.children.get(child.replaces) if child.replaces is not None else None
            slot.pending = None
            slot.pid = child.pid
            child.replaces = None
            if old is not None:
                self._retire(old)
        if slot.pid == child.pid:
            slot.tracker.ready()

    def _check_timeout(self, child: Child, held: tuple[Held, ...], now: float) -> None:
        for h in held:
            if h.timeout > 0 and now - h.started > h.timeout:
                self._abort(child, AbortReason.TIMEOUT, h, held, now)
                return

    def _abort(
        self, child: Child, reason: AbortReason, target: Held, held: tuple[Held, ...], now: float
    ) -> None:
        child.abort = (reason, target, held)
        self.board.request_abort(child.index, reason, target.run_id)
        child.kill_at = now + self.settings.kill_grace
        child.signal(signal.SIGTERM)
        log.warning(
            "run %s: %s; stopping worker %d (pid %d)",
            target.run_id,
            "timeout reached"
            if reason is AbortReason.TIMEOUT
            else "cancellation ignored past cancel_grace",
            child.slot,
            child.pid,
        )
