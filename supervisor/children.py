"""Child process records, forking into :func:`redflow_supervisor.child.run`, and exit decoding.

Fork safety: :func:`fork_child` forks with the handled signals blocked; the
child branch never returns (``child.run`` ends in ``os._exit``), so
nothing of the arbiter runs in a child. The parent has no threads at any time,
which keeps fork safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from redflow_mp.executor import on_failure_of_stored_run
from redflow_mp.registry import Registry

from . import cpulimit, early
from .board import AbortReason, Board, Held
from .child import (
    HANDLED_SIGNALS,
    ChildSpec,
    ExitCode,
    after_fork,
    exit_now,
    set_title,
    spec_client,
)
from .child import run as child_run
from .signals import blocked

__all__ = [
    "Child",
    "ExitInfo",
    "Helpers",
    "count_children",
    "decode_status",
    "end_stuck_hook",
    "fork_child",
    "fork_on_failure",
    "log_exit",
    "warn_threads",
]

log = logging.getLogger("redflow_supervisor")


@dataclass(slots=True)
class Child:
    """What the arbiter knows about one live child."""

    pid: int
    slot: int
    index: int
    generation: int
    started_at: float
    ready: bool = False
    retiring: bool = False
    replaces: int | None = None
    stop_sent: str | None = None  # "term", "quit", "kill"
    kill_at: float | None = None
    abort: tuple[AbortReason, Held, tuple[Held, ...]] | None = None
    cancel_seen: dict[str, float] = field(default_factory=dict)
    recycle_requested: bool = False
    # liveness.StallWatch: the last beat count seen, since when, the CPU time then,
    # when the parent last looked
    beats: int = 0
    progress_at: float = 0.0
    cpu: float | None = None
    looked_at: float = 0.0
    stalled: bool = False  # killed for making no progress (its run is charged a crash)

    def signal(self, sig: int) -> bool:
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def ask_to_stop(self, board: Board) -> bool:
        """Ask this child to stop after its current run, on the board (read between
        runs: a handler may have ignored SIGTERM or installed its own handler) and
        by SIGTERM; False if it was asked already."""
        if self.stop_sent is not None:
            return False
        self.stop_sent = "term"
        board.request_stop(self.index)
        self.signal(signal.SIGTERM)
        return True

    def left_behind(self, held: tuple[Held, ...]) -> list[Held]:
        """The runs to put back once this child is gone: what its board entry held,
        plus what it held when its abort began (its entry may have changed since),
        without the aborted run itself, which is recorded as aborted instead."""
        if self.abort is None:
            return list(held)
        _, target, snapshot = self.abort
        known = {h.run_id for h in held}
        runs = [h for h in snapshot if h.run_id not in known] + list(held)
        return [h for h in runs if h.run_id != target.run_id]


def end_stuck_hook(child: Child, since: float, now: float, limit: float) -> None:
    """Kill ``child`` if the ``on_failure`` hook it runs (since ``since``, 0: none)
    has run past ``limit`` seconds: the run is written and off its books, but a
    hook that never returns (a hung call, a loop) held the child from every
    later run, unseen. Killed, it is replaced like any child that died."""
    if not since or now - since <= limit or child.stop_sent == "kill":
        return
    log.error(
        "worker %d (pid %d): an on_failure hook ran past %g s; killing the worker",
        child.slot,
        child.pid,
        limit,
    )
    child.stop_sent = "kill"
    child.kill_at = None
    child.signal(signal.SIGKILL)


class Helpers:
    """The short-lived processes that run ``on_failure`` for runs the supervisor
    failed itself; each is killed if it runs past ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._deadlines: dict[int, float] = {}

    def start(self, spec: ChildSpec, registry: Registry, run_id: str) -> None:
        try:
            pid = fork_on_failure(spec, registry, run_id)
        except OSError as exc:
            log.error("could not start on_failure for run %s: %s", run_id, exc)
            return
        self._deadlines[pid] = time.monotonic() + self.limit

    def reaped(self, pid: int) -> None:
        self._deadlines.pop(pid, None)

    def check(self, now: float) -> None:
        """Kill the helpers past their deadline (they are reaped like any child)."""
        for pid, deadline in list(self._deadlines.items()):
            if now >= deadline:
                log.error("on_failure process %d ran past %g s; killing it", pid, self.limit)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                self._deadlines[pid] = float("inf")


@dataclass(frozen=True, slots=True)
class ExitInfo:
    code: int | None
    signal: int | None
    # The child left by itself (status 0 or RECYCLE: a handler's sys.exit(0) or
    # os._exit) while a handler was running: a crash, not a clean exit. Also for
    # the status of a boot error (3): a child running a handler booted long ago,
    # so that status is the handler's own (os._exit(3), a C library's exit(3)).
    mid_run: bool = False

    @property
    def clean(self) -> bool:
        return self.code in (ExitCode.OK, ExitCode.RECYCLE) and not self.mid_run

    def given(self, held: tuple[Held, ...]) -> ExitInfo:
        """This exit, marked ``mid_run`` when the child left by itself while a
        handler was running (what its board entry held when it was reaped)."""
        own = (ExitCode.OK, ExitCode.RECYCLE, ExitCode.BOOT_ERROR)
        if self.code in own and any(not h.finishing for h in held):
            return ExitInfo(self.code, self.signal, mid_run=True)
        return self

    def describe(self, *, we_killed: bool) -> str:
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            if self.signal == signal.SIGKILL and not we_killed:
                return f"killed by {name} (not sent by the supervisor: possibly the OOM killer)"
            if self.signal == signal.SIGXCPU:
                return f"killed by {name} ({cpulimit.CAUSE})"
            return f"killed by {name}"
        if self.code == ExitCode.BOOT_ERROR and not self.mid_run:
            return "exited with a boot error"
        during = " while running a handler" if self.mid_run else ""
        return f"exited with code {self.code}{during}"

    def kind(self, *, we_killed: bool) -> str:
        """The ``cause`` label of ``redflow_child_exits_total``."""
        if self.clean:
            return "clean"
        if self.signal is not None:
            return "oom" if self.signal == signal.SIGKILL and not we_killed else "signal"
        if self.code == ExitCode.ABORTED:
            return "aborted"
        if self.code == ExitCode.BOOT_ERROR and not self.mid_run:
            return "boot"
        return "crash"


def count_children(n: int) -> str:
    """``1 child``, ``2 children`` (log lines read correctly)."""
    return f"{n} child" if n == 1 else f"{n} children"


def log_exit(child: Child, info: ExitInfo, cause: str) -> None:
    """Log a child's exit: info when expected, error with the cause otherwise."""
    expected = (
        child.stop_sent is not None or child.retiring or info.clean or child.abort is not None
    )
    if info.code == ExitCode.RECYCLE and not info.mid_run:  # mid-run: the handler's exit
        log.info("worker %d (pid %d) recycled", child.slot, child.pid)
    elif expected:
        log.info("worker %d (pid %d) %s", child.slot, child.pid, cause)
    elif info.signal == signal.SIGKILL:
        log.error("worker %d (pid %d) %s", child.slot, child.pid, cause)
    elif not child.ready:
        log.error("worker %d (pid %d) failed to start: %s", child.slot, child.pid, cause)
    else:
        log.error("worker %d (pid %d) died: %s", child.slot, child.pid, cause)


def decode_status(status: int) -> ExitInfo:
    if os.WIFSIGNALED(status):
        return ExitInfo(None, os.WTERMSIG(status))
    if os.WIFEXITED(status):
        return ExitInfo(os.WEXITSTATUS(status), None)
    return ExitInfo(None, None)  # pragma: no cover - stopped/continued are not reaped


_warned_threads: set[int | None] = set()


def warn_threads() -> None:
    """Warn (once per thread) about threads alive in the parent before a fork:
    workflow modules started them at import (the parent itself has none)."""
    main = threading.main_thread()
    found = [t for t in threading.enumerate() if t is not main and t.ident not in _warned_threads]
    if not found:
        return
    _warned_threads.update(t.ident for t in found)
    log.warning(
        "the workflow modules started %s in the supervisor's parent (%s); it forks its "
        "children anyway: such a thread does not run in them, and a lock it holds at a fork "
        "stays held in that child forever. Start it in the children "
        "(redflow_mp.tracing.setup_in_workers) or lazily in a handler",
        "a thread" if len(found) == 1 else f"{len(found)} threads",
        ", ".join(t.name for t in found),
    )


def fork_child(spec: ChildSpec, board: Board, registry: Registry) -> int:
    """Fork a child that runs ``spec``; returns its pid (in the parent only)."""
    warn_threads()
    with blocked():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which ends in os._exit
            child_run(spec, board, registry)
    return pid


def fork_on_failure(spec: ChildSpec, registry: Registry, run_id: str) -> int:
    """Fork a short-lived process that calls the ``on_failure`` hook of ``run_id``,
    a run the supervisor itself failed; returns its pid (in the parent only).

    User code never runs in the arbiter, and the arbiter never waits for it.
    """
    with blocked():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the helper, which ends in os._exit
            code = 1
            try:
                after_fork(spec.close_fds)
                for sig in HANDLED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                early.ignore_strays()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, (*HANDLED_SIGNALS, *early.STRAY))
                set_title(f"redflow-supervisor[{spec.app}] on_failure {run_id}")
                client = spec_client(spec, registry)
                on_failure_of_stored_run(client, registry, run_id)
                code = 0
            except BaseException:
                log.exception("on_failure of run %s could not be called", run_id)
            finally:
                exit_now(code)
    return pid
