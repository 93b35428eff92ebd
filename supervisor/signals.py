"""Signal plumbing of the arbiter: a wake-up pipe, no-op handlers, masks for fork.

Handlers never log or touch Redis. The C-level handler writes each signal's
number to a non-blocking, close-on-exec pipe (``signal.set_wakeup_fd``); the
arbiter's loop waits on the pipe's read end with a timeout, turns the bytes
back into signal numbers and dispatches them in order.

Fork safety: :func:`blocked` masks every handled signal around ``os.fork`` so
a signal cannot run a parent handler inside a half-initialised child.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from . import early
from .child import HANDLED_SIGNALS

__all__ = ["HANDLED", "SignalPipe", "blocked"]

HANDLED = HANDLED_SIGNALS


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
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
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
