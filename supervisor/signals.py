"""Signal plumbing of the arbiter: a wake-up pipe, no-op handlers, masks for fork.

Handlers never log or touch Redis. The C-level handler writes each signal's
number to a non-blocking, close-on-exec pipe (``signal.set_wakeup_fd``); the
arbiter's loop waits on the pipe's read end with a timeout, turns the bytes
back into signal numbers and dispatches them in order.

The :data:`early.STRAY` signals (not the supervisor's; their default action
ends a process) get the same no-op handler: the arbiter logs each one and
ignores it. :meth:`SignalPipe.close` ignores them again.

Fork safety: :func:`blocked` masks every handled signal around ``os.fork`` so
a signal cannot run a parent handler inside a half-initialised child (nor
write a child's signal into the parent's pipe); a child ignores the stray ones
(``early.ignore_strays``) before it unblocks them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterator

from . import early
from .child import HANDLED_SIGNALS

__all__ = ["HANDLED", "STRAY", "SignalPipe", "blocked", "signal_name"]

STRAY = frozenset(early.STRAY)
# Every signal with a handler of ours in the arbiter, hence blocked around fork.
HANDLED = (*HANDLED_SIGNALS, *early.STRAY)


def signal_name(signum: int) -> str:
    """``SIGALRM`` for 14; ``signal 35`` for a number with no name of its own."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _noop(signum: int, frame: object) -> None:
    """Python-level no-op; the wakeup fd carries the signal number."""


class SignalPipe:
    """The arbiter's wake-up pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, _noop)
        if early.take_pending_hup():  # a HUP during start-up: the loop reloads now
            os.write(self.write_fd, bytes([signal.SIGHUP]))
        resizes = early.take_pending_resizes()  # TTIN/TTOU during start-up, in order
        if resizes:
            os.write(self.write_fd, bytes(resizes))

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def waiting(self) -> bool:
        """Whether a signal arrived that :meth:`drain` has not read yet."""
        # poll, not select.select: that refuses a descriptor past 1023 (ValueError),
        # and the pipe is made after the workflow modules' own descriptors
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        return bool(poller.poll(0))

    def drain(self) -> list[int]:
        """The signals received since the last call, in order (non-blocking)."""
        out: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except BlockingIOError:
                break
            if not data:
                break
            out.extend(data)
        return out

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        early.ignore_strays()  # not their default action while the process exits
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Block the handled signals for the duration (around fork)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
