"""A thread's request/reply connection on the sync hot path (:class:`Wire`).

Owns the send and read of one redis-py connection that ``transport.py``
keeps per thread: commands packed by hiredis, replies read by redis-py, and
the rule that a connection whose replies are out of step (a failure between
sending and reading, a WAIT that took too long) is closed, never reused.
``transport.py`` decides when a wire is opened, routed and dropped.

Fork safety: a wire belongs to the process and thread that opened it
(``Transport._wire`` checks the pid); its ``close`` in a forked child only
closes the inherited descriptor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis  # packs commands in C (redis[hiredis]); redis-py parses with it too
from redis import exceptions as rexc
from redis.exceptions import ResponseError

__all__ = ["Wire"]


class _Wire:
    """One connection used for request/reply only, on this thread's hot path.

    redis-py opens it (TLS, AUTH/ACL, HELLO, SELECT all stay redis-py's) and
    reads each reply (``read_response``: error replies raise the classes
    redis-py maps them to, e.g. LOADING a ``BusyLoadingError``, OOM an
    ``OutOfMemoryError``); hiredis packs the command, which redis-py's own
    packer does at several times the cost. redis-py closes the connection on
    any failure between sending and reading the whole reply (network error,
    timeout, a signal handler raising), so a late reply is never taken as the
    answer to the next command: the next call reconnects.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        # Any: the pool's connection class (TCP, TLS or unix socket); its
        # declared type differs between redis-py 5 and 8.
        self.conn = conn

    def request(self, args: tuple[Any, ...]) -> Any:
        conn = self.conn
        # A list: send_packed_command sends each item of an already packed command.
        conn.send_packed_command([hiredis.pack_command(args)], check_health=False)
        return conn.read_response()

    def request_packed(self, packed: bytes) -> Any:
        """:meth:`request` of a command packed already (``packed.py``)."""
        conn = self.conn
        conn.send_packed_command([packed], check_health=False)
        return conn.read_response()

    def freshen(self) -> None:
        """Before a command that is sent once (not resent after a network error):
        drop the idle connection when it is readable. A request/reply connection
        between requests has nothing to read unless its peer closed it (a Redis
        restart or failover to the same address, a ``CLIENT KILL``, an idle
        timeout) or it holds stray bytes; sending into it would fail after the
        send, and the caller could not tell that nothing was stored. The next send
        reconnects (one ``poll`` system call; redis-py's pool makes the same check
        when it hands out a connection)."""
        conn = self.conn
        try:
            stale = conn.can_read(timeout=0)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()

    def send(self, args: tuple[Any, ...]) -> None:
        """Send ``args`` without reading its reply (``Transport.ahead``)."""
        self.conn.send_packed_command([hiredis.pack_command(args)], check_health=False)

    def read(self) -> Any:
        """The reply of the oldest command sent and not read yet."""
        return self.conn.read_response()

    def request_waited(
        self, commands: Sequence[tuple[Any, ...]], wait: tuple[Any, ...], patience: float
    ) -> tuple[list[Any], Any]:
        """``commands`` and ``wait`` (WAIT / WAITAOF) pipelined: one round trip. Every
        reply is read (an error reply kept as its ``ResponseError``, not raised: the
        connection stays in step); the reply of ``wait`` may take ``patience`` seconds
        (its timeout plus ``transport.SOCKET_TIMEOUT``): the socket's own timeout would cut
        a wait longer than itself (redis-py's ``TimeoutError`` instead of the wait's
        answer). Returns (the replies of ``commands``, that of ``wait``)."""
        conn = self.conn
        packed = [hiredis.pack_command(c) for c in commands]
        conn.send_packed_command([*packed, hiredis.pack_command(wait)], check_health=False)
        replies: list[Any] = []
        try:
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # MOVED, NOSCRIPT...: the caller decides
                    replies.append(exc)
            try:
                acked = self.read_waited(patience)
            except ResponseError as exc:  # WAIT on a node that is not the master
                acked = exc
        except BaseException:
            conn.disconnect()  # replies left unread must never answer a later command
            raise
        return replies, acked

    def read_waited(self, patience: float) -> Any:
        """The next reply, a WAIT's: allowed ``patience`` seconds to start arriving
        (``can_read``: public in redis-py 5.0 to 8), then read as any reply."""
        conn = self.conn
        try:
            ready = conn.can_read(timeout=patience)
        except BaseException:  # a signal handler raising: the reply is still due
            conn.disconnect()
            raise
        if not ready:
            conn.disconnect()  # out of step: the late reply must not answer the next call
            raise rexc.TimeoutError(f"Timeout reading from {self.where()} ({patience:g} s)")
        return conn.read_response()

    def where(self) -> str:
        conn = self.conn
        return str(getattr(conn, "path", "") or f"{conn.host}:{conn.port}")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on a broken socket
            self.conn.disconnect()

    def __del__(self) -> None:
        # The wire goes when its thread's locals go. redis-py connections sit in
        # reference cycles, so without this their sockets would wait for a GC pass
        # (and could be finalized first: "unclosed socket"). In a forked child,
        # disconnect() only closes the inherited descriptor (no shutdown).
        self.close()


Wire = _Wire
"""A thread's request/reply connection (``Transport.ahead``)."""
