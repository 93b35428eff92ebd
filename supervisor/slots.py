"""The arbiter's children, slot by slot: fork, reconcile, reap, watch, abort.

Each slot (``arbiterstate.Slot``) has one process and, during a rolling restart, the
pending one replacing it. ``_reconcile`` forks what a slot lacks (after its restart
backoff), ``_reap`` collects exits (``waitpid(-1, WNOHANG)``), forks a dead child's
replacement, then hands its runs to ``aftermath.py`` (which queues them until their
shard's server answers a short-bounded probe), ``_watch`` reads the shared board:
readiness, run timeouts (``_abort``: TERM, then KILL after ``kill_grace``), kill
deadlines, stuck hooks, stalls.

Fork safety: parent only; it starts no threads. ``children.fork_child`` forks with
the signals blocked.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from .arbiterstate import ON_FAILURE_LIMIT, Mode, Slot
from .board import AbortReason, Held, SlotState
from .child import ChildSpec, ExitCode
from .children import Child, ExitInfo, decode_status, end_stuck_hook, fork_child, log_exit
from .handlers import SignalHandling
from .restart import RestartState
from .settings import client_keywords

__all__ = ["ChildKeeping"]

log = logging.getLogger("redflow_supervisor")


class ChildKeeping(SignalHandling):
    """Forks, reaps and watches the children of the slots."""

    def _child_spec(self, index: int, slot_no: int) -> ChildSpec:
        s = self.settings
        assert self.pipe is not None and self.hub is not None
        return ChildSpec(
            index=index,
            slot=slot_no,
            app=s.app,
            queues=self.queues,
            lease_ms=s.lease_ms,
            max_runs=s.max_runs_per_child,
            cancel_grace=s.cancel_grace,
            **client_keywords(s),
            shards_watched=self.target >= s.shards,
            wake_token=self.wake_token,
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
        try:
            pid = fork_child(spec, self.board, self.registry)
        except OSError as exc:  # EAGAIN at a process limit, ENOMEM: the host's, it passes
            self.board.free(index)
            self.free_entries.append(index)
            slot = self.slots.get(slot_no)
            delay = slot.tracker.fork_failed(now) if slot is not None else 0.0
            log.error("could not fork worker %d: %s; trying again in %.1f s", slot_no, exc, delay)
            return None
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
        stopping = self._stopped_by_us(child, info)
        self.board.free(child.index)  # ``entry`` is a copy: the replacement may take it
        self.free_entries.append(child.index)
        log_exit(child, info, cause)  # before what it means for its slot (restart, FATAL)
        self._leave_slot(child, info, now)
        # Its replacement first, then its runs: putting them back calls Redis (queued
        # in ``aftermath.py``, sent once a short probe finds Redis answering; while
        # Redis stalled each call blocked two socket timeouts, 10 s, then gave up).
        # A fork that fails (EAGAIN, ENOMEM) must not skip the put-back: its run
        # would stay leased to the dead child, its crash never charged.
        try:
            self._reconcile(now)
        finally:
            if self.aftermath is not None:
                self.aftermath.child_died(
                    child,
                    entry,
                    cause,
                    registry=self.registry,
                    stopping=stopping,
                    max_crashes=self.settings.max_run_crashes,
                    lease_ms=self.settings.lease_ms,
                )

    def _leave_slot(self, child: Child, info: ExitInfo, now: float) -> None:
        """The slot of ``child``, which exited: emptied, its restart planned."""
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
            end_stuck_hook(child, entry.hook_since, now, ON_FAILURE_LIMIT)
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
