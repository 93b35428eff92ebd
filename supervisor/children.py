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
import sys
from dataclasses import dataclass, field

from redflow_mp.client import create_client
from redflow_mp.executor import on_failure_of_stored_run
from redflow_mp.registry import Registry

from .board import AbortReason, Board, Held
from .child import HANDLED_SIGNALS, ChildSpec, ExitCode, set_title
from .child import run as child_run
from .signals import blocked

__all__ = ["Child", "ExitInfo", "decode_status", "fork_child", "fork_on_failure"]

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

    def signal(self, sig: int) -> bool:
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False


@dataclass(frozen=True, slots=True)
class ExitInfo:
    code: int | None
    signal: int | None

    @property
    def clean(self) -> bool:
        return self.code in (ExitCode.OK, ExitCode.RECYCLE)

    def describe(self, *, we_killed: bool) -> str:
        if self.signal is not None:
            name = signal.Signals(self.signal).name
            if self.signal == signal.SIGKILL and not we_killed:
                return f"killed by {name} (not sent by the supervisor: possibly the OOM killer)"
            return f"killed by {name}"
        if self.code == ExitCode.BOOT_ERROR:
            return "exited with a boot error"
        return f"exited with code {self.code}"


def decode_status(status: int) -> ExitInfo:
    if os.WIFSIGNALED(status):
        return ExitInfo(None, os.WTERMSIG(status))
    if os.WIFEXITED(status):
        return ExitInfo(os.WEXITSTATUS(status), None)
    return ExitInfo(None, None)  # pragma: no cover - stopped/continued are not reaped


def fork_child(spec: ChildSpec, board: Board, registry: Registry) -> int:
    """Fork a child that runs ``spec``; returns its pid (in the parent only)."""
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
                signal.set_wakeup_fd(-1)
                for fd in spec.close_fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                for sig in HANDLED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
                set_title(f"redflow-supervisor[{spec.app}] on_failure {run_id}")
                client = create_client(spec.url, prefix=spec.prefix, registry=registry)
                on_failure_of_stored_run(client, registry, run_id)
                code = 0
            except BaseException:
                log.exception("on_failure of run %s could not be called", run_id)
            finally:
                with contextlib.suppress(Exception):
                    for handler in logging.getLogger().handlers:
                        handler.flush()
                    sys.stderr.flush()
                os._exit(code)
    return pid
