"""The runtime of a supervisor child, after fork: signals, own Redis client,
worker loop, exit status.

:func:`run` is the only entry after fork and leaves only through
``os._exit(code)`` (in a ``finally``, after flushing logs: ``childlife.py``), so no code of the
parent (atexit handlers, pytest, the arbiter loop) ever runs twice.

Signals in a child:
- TERM: finish the current run, then exit 0 (graceful drain, HUP rolling
  restart, TTOU). The parent also writes this request on the board, read
  between runs: a handler that ignored SIGTERM or installed its own handler
  (some libraries do) cannot keep its child serving. If the parent flagged
  the current run for abort on the board (timeout or cancellation ignored by
  the handler), TERM instead interrupts the handler at once and the child
  exits ``ABORTED``; the parent writes the run's outcome with the lease token
  it read from the board.
- QUIT: exit now; the parent puts the run back.
- INT, HUP, TTIN, TTOU: ignored (the parent decides).
- ALRM, VTALRM, PROF, IO, PWR, STKFLT, XCPU, XFSZ, SYS, TRAP, the real-time
  signals (``early.STRAY``), USR1, USR2, PIPE: ignored (``SIG_IGN``), so a
  ``pkill -ALRM -f redflow`` does not kill a child mid-run; a step ``timeout``
  still installs its own ALRM handler for the step. XCPU sent by the kernel at
  the child's RLIMIT_CPU soft limit ends it (``cpulimit.py``).
- Before each claim, what a handler left changed is undone: TERM, QUIT, INT,
  HUP, TTIN, TTOU and PIPE reset to their default action are handled (or
  ignored) again, CHLD ignored or handled gets its default action back (a
  later run's ``subprocess`` read every exit status as 0), and an ALRM timer
  left armed (a watchdog) is disarmed and ALRM ignored again (it fired in a
  later run); the working directory and the umask go back to the supervisor's.

An orphan (the parent was SIGKILLed) finishes its current run and leaves;
past that run's timeout, or ``cancel_grace`` after it saw the run canceled, it
exits at once (``childlife.orphan_watch``), as nobody else enforces either and
its heartbeat would keep the run's lease forever.
The same thread beats on the board once a second: the parent kills a child
whose beats and CPU time both stop (stopped, frozen: ``liveness.py``).

Between runs a child also leaves when it has no file descriptor left
(``_Hooks.check_descriptors``); ``sys.stdout`` and ``sys.stderr`` on a pipe or
socket never wait long for its reader (``output.py``).

Fork safety: the child never uses, closes or shuts down the parent's Redis
client; it builds its own, after fork, then starts its lease keeper thread,
and never forks. Signals arrive blocked from the parent (it forks with them
masked); handlers are installed before they are unblocked.
"""

from __future__ import annotations

import errno
import functools
import importlib
import logging
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from redis.exceptions import NoPermissionError

from redflow_mp import tracing
from redflow_mp.client import Client, create_client
from redflow_mp.metrics import Metrics
from redflow_mp.registry import Registry
from redflow_mp.scripts import Claimed
from redflow_mp.worker import Worker

from . import cpulimit, early
from .board import AbortReason, Board, SlotState
from .childlife import CancelCheck, ExitCode, after_fork, boot_check, exit_now, orphan_watch
from .exposition import encode_delta, send_pieces
from .logs import flush_logs
from .output import DroppingWriter, dropped, never_block
from .settings import ClientKeywords

# signal.getsignal without its conversion of every answer to an enum (the C
# function under it: 0.1 us a signal instead of 0.7), for the checks before each claim.
_getsignal = cast(Any, importlib.import_module("_signal")).getsignal
_pthread_sigmask = cast(Any, importlib.import_module("_signal")).pthread_sigmask
_SIG_DFL = int(signal.SIG_DFL)
_SIGCHLD = int(signal.SIGCHLD)
_SIGALRM = int(signal.SIGALRM)
_SIG_IGN = int(signal.SIG_IGN)
_ITIMER_REAL = signal.ITIMER_REAL
_getitimer = signal.getitimer

__all__ = [
    "HANDLED_SIGNALS",
    "ChildSpec",
    "ExitCode",
    "after_fork",
    "exit_now",
    "reopen_std_fds",
    "run",
    "set_title",
]

log = logging.getLogger(__name__)

# The signals a supervisor handles; it forks with them blocked, and a child
# installs its own handlers before unblocking them.
HANDLED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Everything a child needs, fixed at fork time."""

    index: int
    slot: int
    app: str
    url: str
    prefix: str
    queues: tuple[str, ...]
    lease_ms: int
    max_runs: int = 0
    max_payload_bytes: int = 8 * 1024 * 1024
    max_events_per_run: int = 10_000
    max_event_bytes_per_run: int = 64 * 1024 * 1024
    redis_functions: bool = False
    cluster: bool = False
    sentinel_master: str | None = None
    durability: str = "none"
    durability_wait_ms: int = 1000
    shards: int = 1
    # every shard has a child blocked on its bells (procs >= shards): see Worker
    shards_watched: bool = False
    # the wake key of the supervisor's children: its drain and retirements push there
    wake_token: str = ""
    close_fds: Sequence[int] = field(default_factory=tuple)
    boot_timeout: float = 10.0
    metrics_fd: int = -1
    cancel_grace: float = 5.0  # enforced by the child itself only as an orphan


def spec_client_keywords(spec: ChildSpec) -> ClientKeywords:
    """``spec``'s client settings under ``create_client``'s keywords: every key of
    :class:`~.settings.ClientKeywords`, so a client setting added there reaches
    every process the arbiter forks (a child, an ``on_failure`` helper) alike."""
    return cast(ClientKeywords, {name: getattr(spec, name) for name in _CLIENT_KEYS})


_CLIENT_KEYS = tuple(sorted(ClientKeywords.__required_keys__))


def spec_client(spec: ChildSpec, registry: Registry) -> Client:
    """The client of a process the arbiter forked (a child or an ``on_failure``
    helper), configured exactly like the parent's (``settings.client_keywords``)."""
    return create_client(**spec_client_keywords(spec), registry=registry, verify_shards=False)


class _Abort(BaseException):
    """Private: unwinds the handler when the parent aborts the current run."""


class _OutOfDescriptors(BaseException):
    """Private: no file descriptor left, even after the child was asked to stop."""


def set_title(text: str) -> None:
    """Set this process's title (what ps shows); cosmetic, never fails."""
    # A try, not contextlib.suppress: its object, made at every call (once a run
    # in a child), cost more CPU than the title itself.
    try:
        _title_setter()(text)
    except Exception:  # titles are cosmetic
        return


@functools.cache
def _title_setter() -> Callable[[str], None]:
    """``setproctitle.setproctitle``, imported at the first title (a process that
    sets none never loads it); cached, so a worker's title a run costs no import."""
    import setproctitle

    return setproctitle.setproctitle


class _Hooks:
    """Worker hooks that publish this child's state on the board."""

    def __init__(self, board: Board, spec: ChildSpec) -> None:
        self.board = board
        self.index = spec.index
        self.base_title = f"redflow-supervisor[{spec.app}] worker {spec.slot}"
        self.stop_requested = False
        self.depth = 0
        self.titled = False  # the title names a run (set back to base_title when idle)
        self.parent_pid = os.getppid()
        self.home: str | None = _cwd()
        # the home as os.getcwdb() gives it (restore_cwd compares those)
        self.home_bytes: bytes | None = None if self.home is None else os.fsencode(self.home)
        self.umask = _umask()  # the supervisor's, inherited
        self.metrics = Metrics()
        self.metrics_fd = spec.metrics_fd
        self._metrics_parent_fd = spec.metrics_fd  # its number in the parent
        self._metrics_id = _identity(spec.metrics_fd)
        self._next_flush = 0.0
        self._unsent: list[bytes] = []
        self.sigmask: set[signal.Signals | int] = set()  # the worker loop's, set in _main
        self.dispositions: dict[signal.Signals, object] = {}  # ours, set in _main
        self.watched: tuple[signal.Signals, ...] = ()  # those not SIG_DFL (_main)
        self._next_fd_check = 0.0  # 0: before the next claim (a run ran since)
        self._dropped_said = 0  # bytes of output dropped, as last reported
        self.writers: list[DroppingWriter] = []  # our stdout/stderr (output.never_block)
        self.out_of_fds = False

    def flush_metrics(self, force: bool = False) -> None:
        """Send metric deltas to the parent at most once a second (or now)."""
        if self.metrics_fd < 0:
            return
        now = time.monotonic()
        if not force and now < self._next_flush:
            return
        self._next_flush = now + 1.0
        if not self.metrics.empty():
            self._unsent.extend(encode_delta(self.metrics.drain()))
        if _identity(self.metrics_fd) != self._metrics_id:
            self._reopen_metrics()
        if self.metrics_fd >= 0:
            self._unsent = send_pieces(self.metrics_fd, self._unsent)[-1000:]

    def _reopen_metrics(self) -> None:
        """A handler closed the pipe to the parent's metrics (``os.closerange``,
        as daemonizing code does), and its number may be another file's or a
        Redis connection's by now: the deltas went there (bytes Redis reads as
        commands) and the parent's counters of this child stopped. Never write
        to that number again: open the parent's end of the pipe anew, or stop."""
        path = f"/proc/{self.parent_pid}/fd/{self._metrics_parent_fd}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("a handler closed this worker's metrics pipe; no more metrics (%s)", exc)
            self.metrics_fd = -1
            return
        log.warning("a handler closed this worker's metrics pipe; opened again")
        self.metrics_fd = fd
        self._metrics_id = _identity(fd)

    def claiming(self, token: str) -> None:
        self.board.set_claim_token(self.index, token)
        if not token and self.depth == 0 and self.titled:
            # The claim found nothing: idle. The title goes back here rather than
            # in finished(): in the steady state the next run starts right after
            # the last one finished, and two titles a run for one that nobody
            # can see cost a setproctitle call (and a prctl) each.
            self.titled = False
            set_title(self.base_title)

    def started(self, run: Claimed, timeout: float | None) -> None:
        self._next_fd_check = 0.0  # the handler may leak: look before the next claim
        # also clears the claim token: on the books now, found by its entry
        self.board.push(self.index, run.id, run.token, run.workflow, timeout, claimed=True)
        self.depth += 1
        self.titled = True
        set_title(f"{self.base_title} running {run.workflow[:60]} {run.id}")

    def finishing(self, run: Claimed) -> None:
        self.board.mark_finishing(self.index)

    def finished(self, run: Claimed) -> None:
        self.board.pop(self.index)
        self.depth -= 1

    def failure_hook(self, running: bool) -> None:
        """On the board: the parent kills this child if the hook runs too long."""
        self.board.set_hook(self.index, time.monotonic() if running else 0.0)

    def should_stop(self) -> bool:
        """Before each claim: flush metrics, undo what a handler did to the
        process (closed standard descriptors, another working directory, signals
        left blocked, reset to their default action, SIGCHLD taken, a SIGALRM
        timer left armed, another umask), and say whether to stop. Log lines that waited for
        stderr's reader (``logsink``) are written here too, not only with the
        next line logged, which an idle child may not log for hours.

        Checks that find nothing to do cost no call of the method that would do
        it (flush_metrics, restore_sigmask, restore_dispositions,
        restore_sigchld, restore_alarm): this runs once a run."""
        if time.monotonic() >= self._next_flush:  # flush_metrics's own clock
            self.flush_metrics()
        flush_logs()
        self.report_dropped()
        self.check_descriptors()  # and the standard ones (reopen_std_fds)
        self.restore_cwd()
        if _set_umask(self.umask) != self.umask:  # one call: reads and restores
            log.warning("a handler changed this worker's umask; back to %03o", self.umask)
        if _pthread_sigmask(signal.SIG_BLOCK, ()) != self.sigmask:
            self.restore_sigmask()
        for sig in self.watched:
            if _getsignal(sig) == _SIG_DFL:
                self.restore_dispositions()
                break
        if _getsignal(_SIGCHLD) != _SIG_DFL:
            self.restore_sigchld()
        if _getitimer(_ITIMER_REAL)[0] or _getsignal(_SIGALRM) != _SIG_IGN:
            self.restore_alarm()
        if os.getppid() != self.parent_pid:
            # The supervisor died (SIGKILL, OOM): no one renews leases or enforces
            # timeouts for us any more. Finish the current run and leave.
            if not self.stop_requested:
                log.error("supervisor (pid %d) is gone; this worker stops", self.parent_pid)
            self.stop_requested = True
        stop, recycle = self.board.leave_requested(self.index)
        if stop:
            # The parent's TERM, read from the board: a handler may have ignored
            # SIGTERM or installed its own handler, and the child must still leave.
            self.stop_requested = True
        return self.stop_requested or recycle

    def report_dropped(self) -> None:
        """Say how much of what handlers printed was dropped since the last time
        (``output.py``: stdout and stderr never block this child)."""
        now = dropped(self.writers)
        if now == self._dropped_said:
            return
        lost, self._dropped_said = now - self._dropped_said, now
        self.metrics.inc("redflow_child_output_dropped_bytes_total", float(lost))
        log.warning(
            "%d bytes of this worker's output dropped: its stdout/stderr was not being read",
            lost,
        )

    def check_descriptors(self) -> None:
        """After each run (and once a second while idle), whether this process
        can still open a descriptor. A handler that leaked them until none was
        left (EMFILE) left its child serving: every later run that opened
        anything (a file, a socket, a Redis connection beyond the child's own)
        failed in it, run after run. Out of them, the child finishes what it
        holds (its connections are open) and leaves, to be replaced; still out
        of them a second later (the finish needed a connection it cannot open),
        it leaves at once and the parent puts its run back, charged a crash.

        Also opens ``/dev/null`` on a standard descriptor a handler closed
        (:func:`reopen_std_fds`), here with no system call of its own after a run:
        ``dup`` returns the lowest free number, so a copy of 0 numbered above 2
        says 0, 1 and 2 are all open (two calls a run, where a ``poll`` of them
        made three)."""
        now = time.monotonic()
        if now < self._next_fd_check:
            reopen_std_fds()
            return
        self._next_fd_check = now + 1.0
        try:
            spare = os.dup(0)
        except OSError as exc:
            reopen_std_fds()  # 0 is closed (EBADF), or none is free (EMFILE)
            if exc.errno != errno.EMFILE:
                return
            if self.out_of_fds:
                raise _OutOfDescriptors() from exc
            self.out_of_fds = True
            self.stop_requested = True
            log.error(
                "no file descriptors left in this worker (the limit is %d: a handler "
                "leaks them?); it stops after its current run and is replaced",
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            return
        os.close(spare)
        if spare <= 2:  # 1 or 2 was free
            reopen_std_fds()

    def restore_sigmask(self) -> None:
        """Unblock the signals a handler left blocked in this thread
        (``signal.pthread_sigmask``): a blocked SIGALRM kept every later step
        ``timeout`` of this child from firing (a step stuck for good held its run
        and child forever, unseen), a blocked TERM or QUIT deafened the child."""
        # _signal's own: signal.pthread_sigmask turns each signal of its answer
        # into an enum, 0.5 us a claim for nothing (an int compares and hashes
        # as its enum does).
        blocked = _pthread_sigmask(signal.SIG_BLOCK, ())
        if blocked == self.sigmask:
            return
        signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
        log.warning(
            "a handler left %s blocked in this worker; unblocked",
            ", ".join(sorted(signal.Signals(s).name for s in blocked - self.sigmask)),
        )

    def restore_dispositions(self) -> None:
        """Handle again the signals a handler reset to their default action
        (``signal.signal(SIGTERM, SIG_DFL)``, as some libraries do): the TERM of a
        drain or a rolling restart then killed the child in the middle of its
        next run (the run put back and charged a crash, its work done again)
        instead of letting it finish. A handler's own handler, or SIG_IGN, is
        left alone: the parent's requests also come by the board."""
        # _signal.getsignal: signal.getsignal's conversion of each answer to an
        # enum cost 4.7 us a claim for seven signals; the raw one 0.7 us.
        reset = [sig for sig in self.watched if _getsignal(sig) == _SIG_DFL]
        if not reset:
            return
        for sig in reset:
            signal.signal(sig, self.dispositions[sig])  # type: ignore[arg-type]
        log.warning(
            "a handler reset %s to the default action in this worker; handled again",
            ", ".join(sorted(sig.name for sig in reset)),
        )

    def restore_alarm(self) -> None:
        """Disarm the real-time timer a handler left armed (``signal.alarm``, a
        watchdog of its own its run ended before) and ignore SIGALRM again: the
        timer fired in the middle of a later run of this child, which failed
        with the earlier run's watchdog error, or, with SIGALRM's default action,
        lost its child (put back, charged a crash, executed again); and while
        a handler of its own stayed installed, every later step ``timeout`` ran
        its step in a thread it could not stop."""
        armed = signal.getitimer(signal.ITIMER_REAL)[0]
        signal.setitimer(signal.ITIMER_REAL, 0)
        handled = _getsignal(_SIGALRM) != _SIG_IGN
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        log.warning(
            "a handler left %s in this worker; %s",
            "SIGALRM's timer armed" if armed else "a SIGALRM handler",
            "disarmed, SIGALRM ignored again"
            if armed and handled
            else ("disarmed" if armed else "SIGALRM ignored again"),
        )

    def restore_sigchld(self) -> None:
        """Give SIGCHLD its default action back when a handler ignored it or
        installed a handler for it (some daemon, server and process-pool code
        does) and left it so: every process a later run of this child started
        was then reaped before the run could wait for it, and ``subprocess``
        reported each exit status as 0 (a failing command under ``check=True``
        passed for a success)."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log.warning(
            "a handler left SIGCHLD ignored or handled in this worker (the exit status "
            "of every process a later run started would read 0); default action again"
        )

    def restore_cwd(self) -> None:
        """Go back to the supervisor's working directory if a handler left it
        (``os.chdir``): later runs' relative paths must not depend on which runs
        this child ran before, nor fail because that directory was removed."""
        if self.home is None:
            return
        try:
            # bytes, compared with the home's: no decoding of the path a run
            if os.getcwdb() == self.home_bytes:
                return
        except OSError:  # the directory we are in was removed
            pass
        try:
            os.chdir(self.home)
        except OSError as exc:  # the supervisor's own directory is gone (a deploy)
            log.warning("cannot go back to %s (%s); no longer trying", self.home, exc)
            self.home = None
            return
        log.warning("this worker's directory changed (a handler's chdir); back in %s", self.home)

    def stopping(self) -> bool:
        """True once TERM asked this child to stop (set from the signal handler)."""
        return self.stop_requested

    def booting_stops(self) -> bool:
        """:meth:`stopping`, or the supervisor gone: an orphan forked during a Redis
        outage waited in ``boot_check`` for as long as Redis stayed away (for good,
        were it gone), where the claim loop's :meth:`should_stop` never ran."""
        if not self.stop_requested and os.getppid() != self.parent_pid:
            log.error("supervisor (pid %d) is gone; this worker stops", self.parent_pid)
            self.stop_requested = True
        return self.stop_requested


def _identity(fd: int) -> tuple[int, int] | None:
    """Device and inode of what descriptor ``fd`` is open on (None: closed)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_set_umask = os.umask


def _umask() -> int:
    """The process's umask (set back at once: os.umask both reads and sets)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _cwd() -> str | None:
    """The working directory; None when it was removed (a deploy replaced it)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def reopen_std_fds() -> None:
    """Open ``/dev/null`` on each of the descriptors 0, 1 and 2 that is closed (a
    handler ran ``sys.stdout.close()`` or a ``with open(1, "w")`` block): the
    next descriptor opened (a later run's file, a Redis connection made again)
    took the number otherwise, and the child's log lines, and whatever code
    printed, went into it. One ``poll`` call when nothing is closed (a closed
    descriptor answers POLLNVAL; three ``fstat`` calls cost 2 us a claim); after
    a run, :meth:`_Hooks.check_descriptors` calls it only when one is closed."""
    closed = [fd for fd, ev in _std_poll().poll(0) if ev & select.POLLNVAL]
    for fd in closed:  # lowest first: each open returns fd itself
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if closed:
        log.warning(
            "a handler closed descriptor %s of this worker; /dev/null is open on it again",
            ", ".join(map(str, closed)),
        )


def _std_poll() -> select.poll:
    """A poll object on descriptors 0-2 with no events asked (POLLNVAL: closed, HUP
    and ERR only), made once per thread: it holds only the numbers, each poll()
    asks the kernel anew, and building it cost a claim 0.5 us. Per thread, as one
    poll object refuses concurrent polls."""
    std: select.poll | None = getattr(_STD, "poll", None)
    if std is None:
        std = select.poll()
        for fd in (0, 1, 2):
            std.register(fd, 0)
        _STD.poll = std
    return std


_STD = threading.local()


def run(spec: ChildSpec, board: Board, registry: Registry) -> NoReturn:
    """Run a child to its end; never returns."""
    code: int = ExitCode.CRASH
    try:
        code = _main(spec, board, registry)
    except _Abort:
        code = ExitCode.ABORTED
    except _OutOfDescriptors:
        log.error("worker %d: still no file descriptors left; it exits now", spec.slot)
        code = ExitCode.CRASH
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.CRASH
    except NoPermissionError as exc:  # one line, not a traceback: the fix is an ACL rule
        log.error(
            "worker %d: Redis refused a command to this user: %s (docs/operations.md, "
            '"Redis ACL", lists what a user needs)',
            spec.slot,
            exc,
        )
        code = ExitCode.CRASH
    except BaseException:
        log.exception("worker %d crashed", spec.slot)
        code = ExitCode.CRASH
    finally:
        try:
            board.set_state(spec.index, SlotState.EXITING)
        finally:
            exit_now(int(code))


def _main(spec: ChildSpec, board: Board, registry: Registry) -> int:
    after_fork(spec.close_fds)
    writers = never_block()  # a handler's print never waits for the reader of our output
    hooks = _Hooks(board, spec)
    hooks.writers = writers
    holder: dict[str, Worker] = {}

    def on_term(signum: int, frame: object) -> None:
        reason, target = board.abort_request(spec.index)
        current = board.read(spec.index).current
        if (
            reason is not AbortReason.NONE
            and current is not None
            and current.run_id == target
            and not current.finishing  # returned already: its finish is on its way
        ):
            raise _Abort(reason.name.lower())
        hooks.stop_requested = True
        worker = holder.get("worker")
        if worker is not None:
            worker.stop()

    def on_quit(signum: int, frame: object) -> None:
        os._exit(ExitCode.FAST_STOP)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGQUIT, on_quit)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    early.ignore_strays()  # not the parent's logging handler (early.STRAY)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*HANDLED_SIGNALS, *early.STRAY))
    cpulimit.install()  # but the kernel's SIGXCPU at RLIMIT_CPU ends the child
    hooks.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    # SIGPIPE too (ignored, as Python starts): a handler that reset it to its
    # default action (the idiom of tools piped into ``head``) left a later run's
    # write to a closed pipe or socket killing the child instead of failing
    # with EPIPE (the run put back, charged a crash, executed again).
    hooks.dispositions = {sig: signal.getsignal(sig) for sig in (*HANDLED_SIGNALS, signal.SIGPIPE)}
    hooks.watched = tuple(s for s, h in hooks.dispositions.items() if h is not signal.SIG_DFL)
    set_title(hooks.base_title)
    cancelled = CancelCheck()  # its client set below
    threading.Thread(
        target=orphan_watch,
        args=(board, spec.index, hooks.parent_pid, cancelled, spec.cancel_grace),
        name="redflow-orphan-watch",
        daemon=True,
    ).start()
    tracing.start_worker()  # the application's tracer provider (setup_in_workers)

    registry.freeze()
    client = spec_client(spec, registry)
    cancelled.client = client
    # The parent loaded the scripts before forking (startup.connect): the first
    # claim asks no SCRIPT EXISTS (a script the server lost since is sent again on
    # its NOSCRIPT reply).
    client.scripts.preloaded = True
    if not boot_check(client, spec.boot_timeout, hooks.booting_stops):
        return ExitCode.OK if hooks.stopping() else ExitCode.BOOT_ERROR
    worker = Worker(
        client,
        queues=spec.queues,
        registry=registry,
        lease_ms=spec.lease_ms,
        hooks=hooks,
        max_runs=spec.max_runs,
        metrics=hooks.metrics,
        home_shard=max(0, spec.index),  # child i blocks on shard i mod shards
        shards_watched=spec.shards_watched,
        wake_token=spec.wake_token or None,
    )
    holder["worker"] = worker
    board.set_state(spec.index, SlotState.IDLE, os.getpid())
    try:
        if not hooks.stopping():
            worker.run()
    finally:
        hooks.flush_metrics(force=True)
    return ExitCode.OK if hooks.stopping() else ExitCode.RECYCLE
