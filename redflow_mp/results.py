"""Waiting for a run to end: subscribe to its ``run-done:<id>`` channel, then read it.

:class:`ResultWaiter` keeps two connections per thread that waits (per
process after a fork), a pub/sub one and one that reads runs, and turns a
finished run into its output or its error (``RunFailedError``,
``RunCanceledError``). No polling loop: the waiter
subscribes first and reads the run second, so a run that finished before the
subscription is seen by the read and a later finish by the message, after which
the run is read again: the outcome is always the run's record, never the
message's text (a user of the server allowed the channel but not the keys could
publish a made-up success). Without a message
the run is read again every ``RESULT_RECHECK_S`` (a lost publish costs that long,
not for ever). A wait with a timeout returns at its deadline even while Redis
does not answer (see :class:`ResultWaiter`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import hiredis
import msgspec
from redis.client import PubSub
from redis.exceptions import ResponseError

from . import codec
from .connection import with_redirects
from .errors import (
    NETWORK_ERRORS,
    TRANSIENT_ERRORS,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    run_failed,
)
from .keys import Keys
from .listing import read_error
from .options import cannot_be_run_id, check_run_id, check_timeout, shown_run_id
from .replies import is_busy
from .transport import Transport, closed_error

__all__ = [
    "RESULT_RECHECK_S",
    "STATE_FIELDS",
    "WAIT_TROUBLE",
    "ResultWaiter",
    "outcome",
    "passes",
    "result_timeout",
    "terminal_state",
    "wait_refusal",
]

_TERMINAL = (b"succeeded", b"failed", b"canceled")
#: Statuses a wait waits on (b"": read as ``queued``, as ``codec.run_status`` reads it).
_KNOWN = frozenset({b"", *(status.value.encode() for status in codec.RunStatus)})

#: A waiter with no message for this long reads the run again (one HMGET): a
#: publish it never got (a pub/sub connection the network dropped silently, which
#: TCP keepalive notices only after hours) must not leave it waiting for ever.
RESULT_RECHECK_S = 15.0

#: The longest a waiting thread's pub/sub read lasts before it looks whether its
#: client was closed (a close cuts the socket and wakes it at once; this bounds
#: the rare case redis-py misses: its read binds the socket before polling it,
#: and a descriptor closed and reused by a new socket between the two is watched
#: instead, for the whole read).
CLOSED_CHECK_S = 1.0

#: The longest single wait of a call that waits until a deadline: ``poll()`` takes
#: int milliseconds (24.8 days at most) and ``Event.wait`` a ``time_t``, so a
#: ``result(timeout=30 days)`` waits in slices instead of overflowing.
_SLICE_S = 86400.0


def _until(limit: float, ready: Callable[[float], bool]) -> bool:
    """``ready(seconds)`` (a bounded wait) in slices until it is true or ``limit``
    (monotonic) passes; whether it became true."""
    while True:
        left = max(0.0, limit - time.monotonic())
        if ready(min(left, _SLICE_S)):
            return True
        if left <= _SLICE_S:
            return False


#: The run fields a waiter reads (``HMGET run:<id> ...``) to learn how a run ended.
STATE_FIELDS = ("status", "outputJson", "errorJson", "cancelReason")
#: What a waiter catches to ask :func:`passes` whether it rides it out.
WAIT_TROUBLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, ResponseError)


class _PerThread(threading.local):
    """This thread's connections (opened by the pid that uses them): the pub/sub
    one and the one that reads runs."""

    conn: Any = None
    reader: Any = None
    pid: int = -1


def _unconfirmed() -> None:
    """durability "none": an outcome is returned as the master has it."""


class _Overdue(Exception):
    """A wait's deadline passed while a call was still waiting for Redis."""


class ResultWaiter:
    """Waits for runs of one namespace to end; thread-safe.

    A wait with a timeout keeps it even while Redis does not answer: the run is
    read on a connection of the waiter's own whose reply is awaited at most until
    the deadline (then the connection is dropped, as its reply may still come),
    and a connection's opening (a handshake the server may never answer: 5 s of
    socket timeout, then a retry) runs in a helper thread that the wait leaves at
    its deadline; the connection is closed when that thread is done with it.
    """

    def __init__(
        self, transport: Transport, keys: Keys, confirm: Callable[[], None] | None = None
    ) -> None:
        self._transport = transport
        self._keys = keys
        # durability "wait"/"waitaof": a write and its WAIT before an outcome is
        # returned (a finish is published before its worker's WAIT confirmed it)
        durable = confirm is not None and transport.durability != "none"
        self._confirm: Callable[[], None] = confirm if durable and confirm else _unconfirmed
        self._local = _PerThread()
        # Every thread's pub/sub objects and readers, for close() (weakly: a
        # thread that ends takes its own with it).
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()

    def wait(self, run_id: str, timeout: float | None = None) -> Any:
        """Block until the run ends; return its output or raise its error."""
        check_run_id(run_id)
        timeout = check_timeout(timeout, "timeout") if timeout != 0 else 0.0
        if cannot_be_run_id(run_id):
            raise RedflowError(
                f"run {shown_run_id(run_id)} does not exist (unknown id, or removed by retention)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        # timeout=0 is one look, however long it takes: its calls are not cut short
        limit = deadline if timeout else None
        channel = self._keys.run_done(run_id).encode()
        while True:
            try:
                self._check_open()  # this thread's connections would reconnect
                # Subscribe first, then read: a finish between the two is seen by
                # the read, a later one by the message. No polling.
                pubsub = self._subscribed(channel, deadline, limit)
                state = self._terminal_state(run_id, limit)
                # The message only wakes the wait: anyone allowed to publish on
                # the channel can send one, so the outcome is the run's own.
                if (
                    state is None
                    and _wait_message(pubsub, channel, deadline, self._check_open) is not None
                ):
                    state = self._terminal_state(run_id, limit)
                if state is not None:
                    self._confirm()
                    return outcome(run_id, state)
                if deadline is not None and time.monotonic() >= deadline:
                    raise result_timeout(run_id, timeout)
            except _Overdue:
                raise result_timeout(run_id, timeout) from None
            except WAIT_TROUBLE as exc:
                if not passes(exc):
                    raise wait_refusal(exc, self._keys.run(run_id))  # noqa: B904 (its cause is set)
                self.drop()
                if deadline is not None and time.monotonic() >= deadline:
                    raise result_timeout(run_id, timeout) from None
                time.sleep(0.05)
            except Exception as exc:
                # A close from another thread drops this thread's connections under
                # a call in flight: redis-py 5's hiredis parser then fails on its
                # dropped reader (AttributeError) rather than on the shut socket.
                if self._transport.closed:
                    self.drop()
                    raise closed_error("client", self._transport.describe()) from exc
                raise
            finally:
                self._unsubscribe(channel)

    def _check_open(self) -> None:
        """Raise the closed client's error, closing this thread's connections."""
        if self._transport.closed:
            self.drop()
            raise closed_error("client", self._transport.describe())

    def _subscribed(self, channel: bytes, deadline: float | None, limit: float | None) -> Any:
        """This thread's pub/sub connection, subscribed to ``channel`` (confirmed, or
        at the deadline / after RESULT_RECHECK_S)."""
        pubsub = self._pubsub()
        if pubsub.connection is None:  # this subscribe opens the connection
            if not _within(limit, lambda: pubsub.subscribe(channel), pubsub.close):
                self._local.conn = None  # closed by the helper when it is done
                raise _Overdue
        else:
            pubsub.subscribe(channel)
        _confirm(pubsub, channel, deadline, self._check_open)
        return pubsub

    def _terminal_state(self, run_id: str, limit: float | None) -> list[bytes | None] | None:
        args = ("HMGET", self._keys.run(run_id), *STATE_FIELDS)
        reply = with_redirects(
            self._transport.router, lambda: self._read(args, limit), self._drop_reader
        )
        return terminal_state(run_id, reply)

    def _read(self, args: tuple[Any, ...], limit: float | None) -> Any:
        """One command on this thread's reader, its reply awaited until ``limit``."""
        conn = self._reader(limit)
        try:
            conn.send_packed_command([hiredis.pack_command(args)], check_health=False)
            if limit is not None and not _until(limit, lambda t: conn.can_read(timeout=t)):
                raise _Overdue
            return conn.read_response()
        except ResponseError:
            raise  # a whole reply was read: the connection is still in step
        except BaseException:
            self._drop_reader()  # its reply may still come
            raise

    def _reader(self, limit: float | None) -> Any:
        local = self._fresh()
        if local.reader is None:
            # Not from the pool's in-use set (as the transport's per-thread wire).
            conn = self._transport.redis.connection_pool.make_connection()
            if not _within(limit, conn.connect, conn.disconnect):
                raise _Overdue
            local.reader = conn
            self._opened.add(conn)
        return local.reader

    def _fresh(self) -> _PerThread:
        """This thread's locals, forgotten (not closed: the parent's) after a fork."""
        local = self._local
        if local.pid != os.getpid():
            local.conn = None
            local.reader = None
            local.pid = os.getpid()
        return local

    def _pubsub(self) -> Any:
        local = self._fresh()
        if local.conn is None:
            local.conn = self._transport.redis.pubsub()
            self._opened.add(local.conn)
        return local.conn

    def _unsubscribe(self, channel: bytes) -> None:
        pubsub = self._local.conn
        if pubsub is None or self._local.pid != os.getpid():
            return
        if self._transport.closed:  # its connection does not open again: just drop it
            self.drop()
            return
        try:
            pubsub.unsubscribe(channel)
        except NETWORK_ERRORS:
            self.drop()

    def _drop_reader(self) -> None:
        conn = self._local.reader
        self._local.reader = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()

    def drop(self) -> None:
        """Close this thread's connections (best effort on a broken socket)."""
        if self._local.pid != os.getpid():
            self._fresh()
            return
        pubsub = self._local.conn
        self._local.conn = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()
        self._drop_reader()

    def close(self) -> None:
        """Close this process's connections, those of every thread: a wait in
        another thread wakes up and raises the closed client's error (its thread
        then closes what it holds: see _check_open)."""
        if self._local.pid == os.getpid():
            self.drop()
        pid = os.getpid()
        for item in list(self._opened):
            conn = item.connection if isinstance(item, PubSub) else item
            if conn is not None and getattr(conn, "pid", pid) == pid:
                with contextlib.suppress(Exception):  # best effort on a broken socket
                    conn.disconnect()


def _within(limit: float | None, call: Callable[[], object], abandon: Callable[[], None]) -> bool:
    """Run ``call`` (it opens a connection) and tell whether it returned by ``limit``
    (its error is raised here). With a limit it runs in a helper daemon thread: a
    server that accepts the TCP connection and answers nothing holds the handshake
    for the socket timeout, and the caller leaves at its deadline; ``abandon`` then
    runs in the helper once ``call`` is over."""
    if limit is None:
        call()
        return True
    helper = _Helper(call, abandon)
    threading.Thread(target=helper.run, name="redflow-result-connect", daemon=True).start()
    return helper.joined(limit)


class _Helper:
    """One call in a helper thread that its caller may leave (see :func:`_within`)."""

    def __init__(self, call: Callable[[], object], abandon: Callable[[], None]) -> None:
        self._call = call
        self._abandon = abandon
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._left = False
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._call()
        except BaseException as exc:
            self._error = exc
        with self._lock:
            self._done.set()
            left = self._left
        if left:
            with contextlib.suppress(Exception):
                self._abandon()

    def joined(self, limit: float) -> bool:
        _until(limit, self._done.wait)
        with self._lock:
            if not self._done.is_set():
                self._left = True
                return False
        if self._error is not None:
            raise self._error
        return True


def _confirm(
    pubsub: Any, channel: bytes, deadline: float | None, check_open: Callable[[], None]
) -> None:
    """Wait for the server's confirmation of the subscription (so no publish is
    missed), at most until ``deadline`` or RESULT_RECHECK_S (then the caller reads
    the run); ``check_open`` raises once the client is closed (CLOSED_CHECK_S)."""
    recheck = time.monotonic() + RESULT_RECHECK_S
    deadline = recheck if deadline is None else min(deadline, recheck)
    while True:
        wait = min(CLOSED_CHECK_S, max(0.05, deadline - time.monotonic()))
        msg = pubsub.get_message(timeout=wait)
        check_open()
        if msg is None:
            if time.monotonic() >= deadline:
                return
            continue
        if msg["type"] == "subscribe" and msg["channel"] == channel:
            return


def _wait_message(
    pubsub: Any, channel: bytes, deadline: float | None, check_open: Callable[[], None]
) -> bytes | None:
    """Block until a message on ``channel`` arrives (its data; ``b""`` when the
    channel was subscribed again, after a lost connection was reopened); None at the
    deadline or after RESULT_RECHECK_S (the caller reads the run again). A close (from another
    thread) shuts the pub/sub socket and redis-py's reconnect is refused
    (``closing.py``): ``get_message`` raises the closed client's error; ``check_open``
    raises it too once the client is closed."""
    recheck = time.monotonic() + RESULT_RECHECK_S
    deadline = recheck if deadline is None else min(deadline, recheck)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        msg = pubsub.get_message(timeout=min(remaining, CLOSED_CHECK_S))
        check_open()
        if msg is None or msg["channel"] != channel:
            continue
        if msg["type"] == "message":
            data = msg["data"]
            return data if isinstance(data, bytes) else str(data).encode()
        if msg["type"] == "subscribe":
            # Subscribed again: redis-py reopened a lost connection by itself (a
            # Redis restart, a failover), and a finish meanwhile was not heard.
            # The caller reads the run again: gone with an empty restart, it is
            # said not to exist now, not after RESULT_RECHECK_S or the timeout.
            return b""


# Pure: how a waiter reads what it got (shared with the asyncio client).


def passes(exc: Exception) -> bool:
    """Whether a waiter rides ``exc`` out (until its deadline) instead of raising
    it: Redis trouble that passes by itself and says nothing of the run (a lost
    connection, a cluster failing over, ``BUSY`` while another program's script
    runs: a wait's reads and ``SUBSCRIBE`` get it raw, as a ``ResponseError``)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, ResponseError) and is_busy(exc)


def wait_refusal(exc: Exception, run_key: str) -> Exception:
    """What a wait raises for ``exc`` that it does not ride out: ``WRONGTYPE`` (the
    run's record replaced by a key of another type) a :class:`WrongTypeError`
    naming ``run_key``, as ``get_run`` raises it, not the server's bare reply."""
    named = read_error(exc, [("hmget", (run_key,))]) if isinstance(exc, ResponseError) else None
    if named is None:
        return exc
    named.__cause__ = exc
    return named


def terminal_state(run_id: str, fields: list[bytes | None]) -> list[bytes | None] | None:
    """``fields`` (the reply to ``HMGET run:<id> *STATE_FIELDS``) when the run has
    ended, None while it runs; an unknown run, or a status this version does not
    know, is a :class:`RedflowError`."""
    status = fields[0]
    if status is None:
        raise RedflowError(f"run {run_id} does not exist (unknown id, or removed by retention)")
    if status in _TERMINAL:
        return list(fields)
    if status not in _KNOWN:  # it was waited on for ever (codec.run_status)
        raise RedflowError(
            f"run {run_id} has status {status.decode('utf-8', 'replace')!r}, which this "
            "version of redflow-mp does not know (written by a newer version or another "
            "program): its end cannot be waited for"
        )
    return None


def result_timeout(run_id: str, timeout: float | None) -> ResultTimeoutError:
    return ResultTimeoutError(f"run {run_id} did not finish within {timeout} s (it keeps running)")


def _decode_output(run_id: str, data: bytes) -> Any:
    try:
        return codec.decode_json(data)
    except msgspec.DecodeError as exc:
        raise RedflowError(
            f"run {run_id} succeeded but its stored output is not valid JSON: {exc}"
        ) from None


def outcome(run_id: str, fields: list[bytes | None]) -> Any:
    """The output of an ended run (from :func:`terminal_state`), or its error raised."""
    status = fields[0]
    if status == b"succeeded":
        return _decode_output(run_id, fields[1]) if fields[1] else None
    error = codec.decode_error(fields[2])
    if status == b"canceled":
        reason = fields[3].decode("utf-8", "replace") if fields[3] else None
        raise RunCanceledError(run_id, error, reason)
    raise run_failed(run_id, error)
