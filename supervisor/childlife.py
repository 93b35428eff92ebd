"""A supervisor child's start and end, around its worker loop (``child.py``):
how it ended (:class:`ExitCode`), what it does first after fork
(:func:`after_fork`) and last (:func:`exit_now`), its wait for Redis before it
reports ready (:func:`boot_check`) and its beat/orphan thread
(:func:`orphan_watch`, which an orphan asks :class:`CancelCheck` whether its
run was canceled)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import NoReturn

from redflow_mp import tracing
from redflow_mp.client import Client
from redflow_mp.errors import TRANSIENT_ERRORS

from .board import Board

__all__ = [
    "EXIT_FLUSH_LIMIT",
    "CancelCheck",
    "ExitCode",
    "after_fork",
    "boot_check",
    "exit_now",
    "orphan_watch",
]

log = logging.getLogger("redflow_supervisor.child")


class ExitCode(IntEnum):
    """How a child ended; the parent reads it from ``waitpid``."""

    OK = 0
    CRASH = 1
    BOOT_ERROR = 3
    ABORTED = 4
    FAST_STOP = 5
    RECYCLE = 10


def after_fork(close_fds: Sequence[int]) -> None:
    """First thing in a process the arbiter forked: leave the parent's wake-up fd
    and descriptors alone (close this copy), and reseed ``random``."""
    signal.set_wakeup_fd(-1)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    random.seed()


def exit_now(code: int) -> NoReturn:
    """Flush pending spans (``tracing.shutdown``), the logs and stdio, then leave
    by ``os._exit`` (no code of the parent, atexit handlers included, runs a
    second time). Past :data:`EXIT_FLUSH_LIMIT` seconds it leaves anyway: a
    log handler or span exporter a handler added that hangs in its flush kept
    the process alive for good (a child retired by HUP or TTOU never left, a
    drain waited for ``graceful_timeout``)."""

    def give_up(signum: int, frame: object) -> None:
        os._exit(code)

    try:
        with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
            signal.signal(signal.SIGALRM, give_up)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
            signal.setitimer(signal.ITIMER_REAL, EXIT_FLUSH_LIMIT)
        tracing.shutdown()
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class CancelCheck:
    """Whether a run's cancellation was requested (its ``cancelRequestedAt``), read
    from Redis by an orphan only: with the parent alive, its backstop sees a
    cancel and enforces ``cancel_grace``. ``client`` is set once the child made it
    (the watch starts before); until then, and after a Redis error, no.

    The read is made on a thread of its own, never on the caller's: a call starts
    one (when none is in flight) and answers what the last one that ended found,
    a second later for a cancel. Made on the watch's thread, the HEXISTS of a
    stalled Redis (SIGSTOP, a host cut off) blocked it for the socket timeout and
    the client's retries (~20 s) each second, and the run's ``timeout`` was
    enforced that much later."""

    __slots__ = ("_asking", "_canceled", "_lock", "client")

    def __init__(self) -> None:
        self.client: Client | None = None
        self._lock = threading.Lock()
        self._asking = False
        self._canceled = ""  # the run the last read found canceled

    def __call__(self, run_id: str) -> bool:
        client = self.client
        if client is None:
            return False
        with self._lock:
            if not self._asking:
                asker = threading.Thread(
                    target=self._ask,
                    args=(client, run_id),
                    name="redflow-cancel-check",
                    daemon=True,
                )
                try:
                    asker.start()
                    self._asking = True
                except RuntimeError:  # no thread to be had now: asked again in a second
                    pass  # (raised, it ended the orphan watch: no beats, no timeout)
            return self._canceled == run_id

    def _ask(self, client: Client, run_id: str) -> None:
        canceled = False
        try:
            shard = client.shard_of_run(run_id)
            canceled = bool(shard.redis.hexists(shard.keys.run(run_id), "cancelRequestedAt"))
        except Exception:  # Redis out of reach, a hand-made id: asked again in a second
            pass
        finally:
            with self._lock:
                if canceled:
                    self._canceled = run_id
                self._asking = False


def orphan_watch(
    board: Board,
    index: int,
    parent_pid: int,
    cancelled: Callable[[str], bool] = lambda run_id: False,
    cancel_grace: float = 5.0,
) -> None:
    """Once a second, beat on the board: the parent replaces a child whose beats
    stop while it uses no CPU (stopped: ``liveness.py``). And when the parent is
    gone (SIGKILL, OOM), nobody enforces the current run's ``timeout`` nor
    ``cancel_grace`` after a cancel any more, while this child's heartbeat keeps
    the run's lease alive: a handler hung past its timeout, or deaf to its
    cancellation, would keep its run from every other supervisor for as long as
    it runs. Past the timeout, or ``cancel_grace`` after this orphan first saw the
    run's cancel requested (``cancelled``, once a second: it must not block, see
    :class:`CancelCheck`), leave: the lease lapses
    and another supervisor's reaper takes the run over (a canceled one ends
    ``canceled``). (A handler holding the GIL stops this thread and the heartbeat
    alike: its lease lapses.)"""
    seen: dict[str, float] = {}  # run id -> when its cancel was first seen
    while True:
        time.sleep(_ORPHAN_CHECK_EVERY)
        board.beat(index)
        if os.getppid() == parent_pid:
            continue
        now = time.monotonic()
        held = board.read(index).held
        for run in held:
            if run.timeout > 0 and now - run.started > run.timeout:
                log.error(
                    "supervisor (pid %d) is gone and run %s is past its timeout (%g s): "
                    "this worker exits; the run is taken over once its lease expires",
                    parent_pid,
                    run.run_id,
                    run.timeout,
                )
                os._exit(ExitCode.ABORTED)
            if run.finishing or not (run.run_id in seen or cancelled(run.run_id)):
                continue
            if now - seen.setdefault(run.run_id, now) >= cancel_grace:
                log.error(
                    "supervisor (pid %d) is gone and run %s ignored its cancellation for "
                    "cancel_grace (%g s): this worker exits; the run ends canceled once "
                    "its lease expires",
                    parent_pid,
                    run.run_id,
                    cancel_grace,
                )
                os._exit(ExitCode.ABORTED)
        for run_id in [r for r in seen if r not in {h.run_id for h in held}]:
            del seen[run_id]  # let go of (a resumed run starts afresh)


# How long a leaving process may take to flush its spans and logs (exit_now).
EXIT_FLUSH_LIMIT = 10.0

# How often an orphaned child (its supervisor is gone) looks at its run's timeout.
_ORPHAN_CHECK_EVERY = 1.0

# How often a child waiting for Redis at its start says so (after its first line).
_OUTAGE_REPORT_EVERY = 60.0


def boot_check(client: Client, timeout: float, stopping: Callable[[], bool]) -> bool:
    """Reach Redis before reporting ready. Redis out of reach (a network or
    transient error: an outage, a restart loading its data) is waited out for as
    long as it lasts, with an error line after ``timeout`` and each minute: the
    parent reached Redis at its start, so this is no start failure, and counting
    it as one took a supervisor to FATAL (exit 1) in an outage of about a minute
    while a child was being replaced. Any other error (refused credentials, a
    server too old) still fails the start after ``timeout``. False when the start
    failed or TERM asked the child to stop."""
    deadline = time.monotonic() + timeout
    said = 0.0
    delay = 0.05
    while not stopping():
        try:
            # One round trip (INFO server), on the connection the claims use next:
            # the version chooses the scripts' text, and the answer shows Redis is there.
            client.transport.server_version()
            if said:
                log.info("worker reached Redis at %s", client.transport.describe())
            return True
        except TRANSIENT_ERRORS as exc:
            now = time.monotonic()
            if now >= deadline and now - said >= _OUTAGE_REPORT_EVERY:
                log.error(
                    "worker cannot reach Redis at %s: %s; waiting for it",
                    client.transport.describe(),
                    exc,
                )
                said = now
        except Exception as exc:
            if time.monotonic() >= deadline:
                log.error("worker cannot reach Redis at %s: %s", client.transport.describe(), exc)
                return False
        time.sleep(delay)
        delay = min(1.0, delay * 2)
    return False
