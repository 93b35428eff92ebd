"""Signals that reach ``redflow-supervisor`` before its arbiter loop runs.

Start-up (importing the workflow modules, connecting to Redis with up to 15 s
of patience, syncing the registry, loading the scripts) can take seconds. With
the default dispositions a signal then killed the process: TERM and HUP by
their default action (systemd counts a death by SIGHUP or SIGTERM as a clean
exit, so ``Restart=on-failure`` left a supervisor killed by a ``systemctl
reload`` right after ``start`` down for good), QUIT with a core dump, and INT
(Ctrl-C) printed a ``KeyboardInterrupt`` traceback.

:func:`install` (called by :func:`redflow_supervisor.entry.supervisor` before
anything heavy is imported) sets handlers for that window: TERM, INT and QUIT
raise :class:`StartupStop`, which the command turns into one line and exit
status 0 (no child runs yet, so nothing is held and nothing is lost); HUP is
noted, and the arbiter's signal pipe replays it once the loop runs (a reload
then, as at any other time). TTIN and TTOU are noted the same way, in order, and
replayed (one child more / less once the children run): their default action
stops the process (job control), which froze a supervisor started from a shell
for good, and elsewhere (an orphaned process group) the kernel dropped them.
The arbiter's own handlers replace these when its pipe is made
(``signals.SignalPipe``).

Invariant: this module imports only the standard library (the entry point
installs it before importing redis-py or the library). Fork safety: children
are forked after the arbiter replaced these handlers.
"""

from __future__ import annotations

import signal

__all__ = [
    "IGNORED",
    "StartupStop",
    "install",
    "settle",
    "take_pending_hup",
    "take_pending_resizes",
]

_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_RESIZES = (signal.SIGTTIN, signal.SIGTTOU)
# Ignored for the supervisor's whole life, and by its children (an ignored
# disposition is inherited across fork): their default action ended the process,
# so a logrotate ``postrotate kill -USR1`` (the supervisor holds no log file to
# reopen: it writes to stderr), or a ``kill -USR1`` meant for another daemon,
# took the supervisor down and every child the signal reached.
IGNORED = (signal.SIGUSR1, signal.SIGUSR2)
_hup_pending = False
_resizes: list[int] = []  # TTIN/TTOU received during start-up, in order


class StartupStop(BaseException):
    """TERM, INT or QUIT arrived during start-up. A ``BaseException`` (as
    ``KeyboardInterrupt``): a workflow module's import or a retry loop must not
    swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _stop(signum: int, frame: object) -> None:
    raise StartupStop(signum)


def _note_hup(signum: int, frame: object) -> None:
    global _hup_pending
    _hup_pending = True


def _note_resize(signum: int, frame: object) -> None:
    if len(_resizes) < 256:  # bounded: a flood of them is not a plan
        _resizes.append(signum)


def install() -> None:
    """Handle TERM, INT, QUIT, HUP, TTIN and TTOU until the arbiter's loop takes
    over; ignore USR1 and USR2 for good (:data:`IGNORED`)."""
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    for sig in _STOPS:
        signal.signal(sig, _stop)
    signal.signal(signal.SIGHUP, _note_hup)
    for sig in _RESIZES:
        signal.signal(sig, _note_resize)


def settle() -> None:
    """After a :class:`StartupStop`: later stop signals are ignored while the
    process exits (a second TERM must not interrupt the clean-up)."""
    for sig in _STOPS:
        signal.signal(sig, signal.SIG_IGN)


def take_pending_hup() -> bool:
    """Whether a HUP came during start-up (and forget it)."""
    global _hup_pending
    pending, _hup_pending = _hup_pending, False
    return pending


def take_pending_resizes() -> list[int]:
    """The TTIN/TTOU signals that came during start-up, in order (and forget them)."""
    pending = list(_resizes)
    _resizes.clear()
    return pending
