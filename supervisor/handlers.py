"""The arbiter's signal handlers: stops (graceful drain, fast stop), reload, scaling.

``_on_signal`` turns a signal number read from the wake-up pipe into a call of
``handle_<name>``; the handlers run in the loop, never in signal context, so they may
log and call Redis (``signals.py`` keeps the real handlers no-ops). TERM drains (a
second TERM, INT or QUIT stops fast), HUP reloads and replaces the children one by
one, TTIN/TTOU add or remove a slot, CHLD only wakes the loop.

Fork safety: parent only; it starts no threads.
"""

from __future__ import annotations

import logging
import signal
import time

import msgspec

from redflow_mp.errors import TRANSIENT_ERRORS

from .arbiterstate import ArbiterState, Mode, Slot
from .children import count_children
from .drainclock import FAST_STOP_S
from .restart import SlotTracker
from .settings import Settings, held_for_restart
from .signals import STRAY, signal_name
from .startup import resync

__all__ = ["SignalHandling"]

log = logging.getLogger("redflow_supervisor")


class SignalHandling(ArbiterState):
    """The ``handle_<name>`` methods and the stops, reload and scaling they start."""

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

    def _resign(self) -> None:
        if self.leader is not None:
            if self._out_of_reach():  # each call would block its socket timeouts
                # Stops competing all the same: before, the drain went on leading
                # (its status said so, its sweeps ran) until the lock lapsed.
                self.leader.enabled = False
                log.warning("cron leader lock not released (Redis out of reach): it expires")
                return
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
