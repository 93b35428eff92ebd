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

:data:`STRAY` are the signals no part of the supervisor uses whose default
action ends a process: ALRM, VTALRM, PROF, IO (POLL), PWR, STKFLT, XCPU, XFSZ,
SYS, TRAP and the real-time signals. A ``kill -ALRM`` meant for another
process, a ``pkill -PROF -f redflow`` or a power daemon's PWR ended the parent
by that default action (its children became orphans, finished their run and
left: the supervisor was down until restarted) and killed a child mid-run (its
run counted a crash). They are ignored during start-up (:func:`install`), then
logged and ignored by the arbiter (``signals.SignalPipe``), and ignored by
every process it forks (:func:`ignore_strays`): ``SIG_IGN`` rather than the
parent's Python handler, so a step ``timeout`` still finds ALRM free to arm and
no system call of a handler's C code is interrupted (a subprocess a handler
execs inherits the ignored dispositions, as it does USR1's). A kernel-generated SYS
(seccomp) or TRAP (breakpoint) is forced through an ignored disposition and
still ends the process; only a sent one is ignored. PIPE keeps Python's own
``SIG_IGN`` (a write to a closed pipe or socket fails with ``EPIPE`` where it
happens).

Invariant: this module imports only the standard library (the entry point
installs it before importing redis-py or the library). Fork safety: children
are forked after the arbiter replaced these handlers.
"""

from __future__ import annotations

import contextlib
import signal
import sys

__all__ = [
    "IGNORED",
    "STRAY",
    "StartupStop",
    "ignore_strays",
    "install",
    "report_stop",
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


def _strays() -> tuple[int, ...]:
    names = (
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",  # SIGPOLL on Linux
        "SIGPWR",
        "SIGSTKFLT",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGSYS",
        "SIGTRAP",
    )
    found = [int(getattr(signal, name)) for name in names if hasattr(signal, name)]
    if hasattr(signal, "SIGRTMIN"):
        found += range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    return tuple(found)


# Signals nobody here uses whose default action ends a process (module docstring).
STRAY: tuple[int, ...] = _strays()
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
    # The first stop wins, before it raises: a burst (TERM, INT, QUIT, a Ctrl-C
    # held down) raised StartupStop again while the first unwound, past the
    # command's handler (exit status 1, "lost sys.stderr").
    settle()
    raise StartupStop(signum)


def report_stop(stop: StartupStop) -> int:
    """End start-up after ``stop``: later stops are ignored (:func:`settle`), one
    line on stderr; returns the exit status (0: nothing was claimed). For every
    place a start-up stop may surface: the supervisor's own imports
    (``entry.supervisor``) and its command (``cli.main``)."""
    settle()
    # stderr may be a pipe whose reader left (``2>&1 | head -1`` and a Ctrl-C):
    # the line is lost then, and the exit status stays 0 (it was 1).
    with contextlib.suppress(OSError):
        print(
            f"redflow-supervisor: received {stop.name} during start-up; stopped "
            "(no child had started, nothing was claimed)",
            file=sys.stderr,
            flush=True,
        )
    return 0


def _note_hup(signum: int, frame: object) -> None:
    global _hup_pending
    _hup_pending = True


def _note_resize(signum: int, frame: object) -> None:
    if len(_resizes) < 256:  # bounded: a flood of them is not a plan
        _resizes.append(signum)


def install() -> None:
    """Handle TERM, INT, QUIT, HUP, TTIN and TTOU until the arbiter's loop takes
    over; ignore USR1 and USR2 for good (:data:`IGNORED`) and the :data:`STRAY`
    signals until the arbiter logs them."""
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    ignore_strays()
    for sig in _STOPS:
        signal.signal(sig, _stop)
    signal.signal(signal.SIGHUP, _note_hup)
    for sig in _RESIZES:
        signal.signal(sig, _note_resize)


def ignore_strays() -> None:
    """Ignore the :data:`STRAY` signals (start-up, and every forked process)."""
    for sig in STRAY:
        signal.signal(sig, signal.SIG_IGN)


def settle() -> None:
    """Once a :class:`StartupStop` is raised: later stop signals are ignored while
    the process exits (a second TERM must not interrupt the clean-up). By a
    Python no-op, not ``SIG_IGN``: a signal already tripped but not yet handled
    then finds no Python handler, and CPython prints a traceback (``OSError:
    Signal 15 ignored due to race condition``)."""
    for sig in _STOPS:
        signal.signal(sig, _ignore)


def _ignore(signum: int, frame: object) -> None:
    """A stop signal after the first one during start-up (:func:`settle`)."""


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
