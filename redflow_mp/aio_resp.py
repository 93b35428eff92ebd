"""The wire of the asyncio transport (``aio_transport.py``): a small asyncio
protocol for RESP2 that packs with ``hiredis.pack_command`` and parses with
``hiredis.Reader``. Requests are pipelined on one connection: each gets a
future, replies resolve them in order, so a caller that stops waiting (a
cancelled task) leaves its reply to be dropped, never read by the next caller.
The pub/sub side (:class:`Channel`, :class:`Subscriber`) hands ``message``
pushes to the channel's waiters. A reply watchdog closes a connection whose
oldest request waited :data:`~redflow_mp.transport.SOCKET_TIMEOUT` seconds.

Nothing here is thread-safe: one loop, one thread. Fork safety: as
``aio_transport.py`` (an event loop does not survive a fork).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis import exceptions as rexc

from .transport import SOCKET_TIMEOUT

__all__ = ["Channel", "Resp", "Subscriber", "consume_exception", "wait_for_future"]

# Error replies as redis-py maps them (the same classes and messages the sync
# client raises): the code is dropped from the message of the codes it knows.
_ERRORS: dict[str, type[rexc.ResponseError] | type[rexc.ConnectionError]] = {
    "ERR": rexc.ResponseError,
    "OOM": rexc.OutOfMemoryError,
    "WRONGPASS": rexc.AuthenticationError,
    "NOAUTH": rexc.AuthenticationError,
    "NOPERM": rexc.NoPermissionError,
    "EXECABORT": rexc.ExecAbortError,
    "LOADING": rexc.BusyLoadingError,
    "NOSCRIPT": rexc.NoScriptError,
    "READONLY": rexc.ReadOnlyError,
    # a cluster's "not here" replies (connection.awith_redirects retries them)
    "MOVED": rexc.MovedError,
    "ASK": rexc.AskError,
    "CLUSTERDOWN": rexc.ClusterDownError,
    "TRYAGAIN": rexc.TryAgainError,
}


def _error(reply: hiredis.ReplyError) -> Exception:
    message = str(reply)
    code, _, rest = message.partition(" ")
    cls = _ERRORS.get(code)
    if cls is None:
        return rexc.ResponseError(message)
    if code == "ERR" and rest.startswith("max number of clients reached"):
        return rexc.ConnectionError(rest)
    return cls(rest)


def consume_exception(fut: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen (no "never retrieved" log when
    every task that waited on it has gone)."""
    if not fut.cancelled():
        fut.exception()


async def wait_for_future(fut: asyncio.Future[Any], deadline: float | None) -> bool:
    """Wait until ``fut`` is done or the loop time ``deadline`` passes; True when done.

    ``fut`` is never awaited directly, so a task cancelled while waiting does not
    cancel a future other tasks share. The caller reads ``fut.result()``.
    """
    if fut.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    fut.add_done_callback(wake)
    timer = None if deadline is None else loop.call_at(deadline, wake)
    try:
        await waiter
    finally:
        fut.remove_done_callback(wake)
        if timer is not None:
            timer.cancel()
    return fut.done()


class Resp(asyncio.Protocol):
    """One RESP2 connection: requests answered in order, messages handed on.

    ``_waiting`` holds one entry per request sent, oldest first: the future its
    reply resolves (None for a request nobody waits for) and when its
    :data:`SOCKET_TIMEOUT` starts: when it was sent, later for a WAIT (``extra``
    seconds: the wait itself) and for a request sent behind one (the server
    answers it once the WAIT has answered). Never earlier than the entry before.
    With ``on_message`` set (the pub/sub connection) a ``message`` reply goes
    there instead; subscribe and unsubscribe confirmations are replies like any
    other, in order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self._loop = loop
        self._where = where
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any] | None, float]] = deque()
        self._latest = 0.0  # the newest entry's start (see _waiting)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused: asyncio.Future[None] | None = None
        self.lost: Exception | None = None
        self.on_message: Callable[[bytes, bytes], None] | None = None
        self.on_lost: Callable[[Exception], None] | None = None
        self.generation = -1  # the cluster router's generation when it connected

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport)
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        on_message = self.on_message
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(rexc.ConnectionError(f"protocol error from {self._where}: {exc}"))
                return
            if reply is False:
                return
            if on_message is not None and type(reply) is list and reply and reply[0] == b"message":
                on_message(reply[1], reply[2])
                continue
            if not waiting:
                self._abort(rexc.ConnectionError(f"unexpected reply from {self._where}"))
                return
            fut, _ = waiting.popleft()
            if fut is None or fut.done():
                continue  # fire-and-forget, or the waiter has gone (cancelled)
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            self.lost
            or rexc.ConnectionError(
                f"connection to {self._where} lost" + (f": {exc}" if exc else "")
            )
        )

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = self._loop.create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    # --- requests ----------------------------------------------------------

    def request(self, args: tuple[Any, ...], extra: float = 0.0) -> asyncio.Future[Any]:
        """Send one command; the future its reply resolves. ``extra``: seconds its
        reply may take beyond :data:`SOCKET_TIMEOUT` (a WAIT's own timeout)."""
        fut = self._loop.create_future()
        self.send(args, fut, extra)
        return fut

    def send(
        self, args: tuple[Any, ...], fut: asyncio.Future[Any] | None, extra: float = 0.0
    ) -> None:
        """Send one command whose reply resolves ``fut`` (None: nobody waits)."""
        if self.lost is not None:
            raise self.lost
        assert self._transport is not None
        start = self._loop.time() + extra
        if start < self._latest:
            start = self._latest  # behind a WAIT: answered once it has answered
        self._latest = start
        self._waiting.append((fut, start))
        self._transport.write(hiredis.pack_command(args))
        if self._timer is None:
            self._timer = self._loop.call_at(start + SOCKET_TIMEOUT, self._check_replies)

    @property
    def paused(self) -> bool:
        """True while the write buffer is over its high-water mark."""
        return self._paused is not None

    async def drained(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._paused is not None:
            await wait_for_future(self._paused, None)
            if self.lost is not None:
                raise self.lost

    def _check_replies(self) -> None:
        """The reply watchdog: a request unanswered for SOCKET_TIMEOUT seconds (from
        its start: see ``_waiting``) means a dead or stalled connection; close it
        and fail every request."""
        self._timer = None
        if not self._waiting or self.lost is not None:
            return
        oldest = self._waiting[0][1]
        now = self._loop.time()
        if now - oldest >= SOCKET_TIMEOUT:
            self._abort(rexc.TimeoutError(f"Timeout reading from {self._where}"))
            return
        self._timer = self._loop.call_at(oldest + SOCKET_TIMEOUT, self._check_replies)

    def _abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for fut, _ in waiting:
            if fut is not None and not fut.done():
                fut.set_exception(self.lost)
        self.resume_writing()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self.lost)

    def close(self, exc: Exception) -> None:
        """Close the connection; pending requests fail with ``exc``."""
        self._abort(exc)

    def release(self, exc: Exception, release: Callable[[Any], None]) -> None:
        """Close the connection from outside its event loop, which is not running
        (another loop's ``aclose()``): the socket is closed now by ``release``
        (``aio_connection.release_transport``). On a loop that has ended nothing
        waits any more, and its futures cannot be resolved (that needs the loop):
        they are dropped; on one that may run again they fail with ``exc`` then."""
        if self._loop.is_closed():
            if self.lost is None:
                self.lost = exc
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._waiting.clear()
            self.on_lost = None
        else:
            self._abort(exc)
        if self._transport is not None:
            release(self._transport)


class Channel:
    """One subscribed channel of the pub/sub connection, shared by its waiters.

    ``ready`` resolves when the server confirms the subscription, ``message``
    with the first message's data (a run's ``run-done`` channel gets one).
    """

    __slots__ = ("message", "name", "ready", "refs", "resp")

    def __init__(self, name: bytes, resp: Resp, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.resp = resp
        self.refs = 1
        self.ready: asyncio.Future[Any] = loop.create_future()
        self.message: asyncio.Future[bytes] = loop.create_future()
        self.ready.add_done_callback(consume_exception)
        self.message.add_done_callback(consume_exception)


class Subscriber:
    """The channels of one pub/sub connection (gone with it)."""

    def __init__(self, resp: Resp) -> None:
        self.resp = resp
        self.channels: dict[bytes, Channel] = {}
        resp.on_message = self._on_message
        resp.on_lost = self._on_lost

    def _on_message(self, name: bytes, data: bytes) -> None:
        channel = self.channels.get(name)
        if channel is not None and not channel.message.done():
            channel.message.set_result(data)

    def _on_lost(self, exc: Exception) -> None:
        channels, self.channels = self.channels, {}
        for channel in channels.values():
            if not channel.message.done():
                channel.message.set_exception(exc)
