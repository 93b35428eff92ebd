"""The Redis connection layer: one redis-py client plus a lean per-thread hot path.

Owns every socket the library opens. General commands go through a
``redis.Redis`` client (connection pool, TLS, ACL auth, RESP parsing by
hiredis). The hot paths (enqueue, claim/finish, step writes) go through
:meth:`Transport.call`, which keeps one pooled connection per thread and talks
to it directly: redis-py's per-command machinery costs about as much as the
round trip itself on loopback, and a worker makes one call per run.

Replies are bytes (never decoded by redis-py); callers decode what they need.

Fork safety: connections remember the pid that opened them. After a fork the
child never touches an inherited socket (it would interleave with the parent's
traffic); it opens its own on first use. redis-py's pool does the same for the
general client.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis  # packs commands and parses replies in C (redis[hiredis])
import redis
from redis._parsers.base import BaseParser
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import NETWORK_ERRORS as _NETWORK_ERRORS
from .errors import RedflowError

__all__ = ["Transport", "mask_url"]

_parse_error = cast(Callable[[str], Exception], BaseParser.parse_error)


def _reply_error(message: str) -> Exception:
    """Map an error reply to the class redis-py would raise (LOADING is a
    ConnectionError, NOSCRIPT a NoScriptError, OOM an OutOfMemoryError, ...):
    callers and the retry logic test for those."""
    return _parse_error(message)


class _Wire:
    """One connection used for request/reply only, on this thread's hot path.

    redis-py opens it (TLS, AUTH/ACL, HELLO, SELECT all stay redis-py's); after
    that the socket is driven directly: hiredis packs the command and parses the
    reply, without redis-py's per-command layers (about a third of a loopback
    round trip's client CPU).
    """

    __slots__ = ("buf", "conn", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: Any = None
        self.reader: Any = None
        self.buf = bytearray(65536)

    def request(self, args: tuple[Any, ...]) -> Any:
        if self.sock is None:
            self.conn.connect()
            self.sock = self.conn._sock
            self.reader = hiredis.Reader(replyError=_reply_error)
        sock, reader, buf = self.sock, self.reader, self.buf
        try:
            sock.sendall(hiredis.pack_command(args))
            reply = reader.gets()
            while reply is False:
                n = sock.recv_into(buf)
                if not n:
                    raise RedisConnectionError("Redis closed the connection")
                reader.feed(buf, 0, n)
                reply = reader.gets()
        except (OSError, RedisConnectionError) as exc:
            self.close()
            if isinstance(exc, TimeoutError | socket.timeout):
                raise RedisTimeoutError(f"reading from Redis timed out: {exc}") from None
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"lost the connection to Redis: {exc}") from None
        except BaseException:
            # Interrupted between sending and reading the whole reply (a signal
            # handler raising, a protocol error): the next reply on this socket
            # would answer this command. Start over on a new connection.
            self.close()
            raise
        if isinstance(reply, Exception):  # an error reply, mapped by _reply_error
            raise reply
        return reply

    def close(self) -> None:
        self.sock = None
        self.reader = None
        with contextlib.suppress(Exception):  # best effort on a broken socket
            self.conn.disconnect()

    def __del__(self) -> None:
        # The wire goes when its thread's locals go. redis-py connections sit in
        # reference cycles, so without this their sockets would wait for a GC pass
        # (and could be finalized first: "unclosed socket"). In a forked child,
        # disconnect() only closes the inherited descriptor (no shutdown).
        if self.sock is not None:
            self.close()


def mask_url(url: str) -> str:
    """``url`` with any password (user info or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{user}:***@{host}" if user else f":***@{host}"
    query = parts.query
    if query:
        pairs = []
        for piece in query.split("&"):
            key, sep, _value = piece.partition("=")
            pairs.append(f"{key}=***" if sep and key.lower() == "password" else piece)
        query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _own_client(url: str | None, client: redis.Redis | None) -> redis.Redis:
    """A bytes-returning client: from ``url``, or cloned from a caller's client settings."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3)
    if client is not None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["decode_responses"] = False
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        return redis.Redis(connection_pool=new_pool)
    if url is None:
        url = "redis://localhost:6379/0"
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be a non-empty redis:// or rediss:// URL")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        retry=retry,
        health_check_interval=0,
        socket_keepalive=True,
        socket_connect_timeout=5.0,
        # Bounded reads: a connection silently dropped by the network fails after
        # this long instead of hanging a worker or the arbiter. Longer than any
        # blocking wait we issue (BLPOP uses at most a few seconds).
        socket_timeout=5.0,
    )


class _Local(threading.local):
    pid: int = -1
    wire: _Wire | None = None


class Transport:
    """Owns the Redis client and the per-thread hot-path connections."""

    def __init__(self, url: str | None = None, client: redis.Redis | None = None) -> None:
        self.url = url if client is None else None
        self.redis: redis.Redis = _own_client(url, client)
        self._local = _Local()
        self._held: weakref.WeakSet[Any] = weakref.WeakSet()
        self._held_lock = threading.Lock()
        self._version: tuple[int, ...] | None = None
        self._held_pid = os.getpid()

    def describe(self) -> str:
        """The server address for messages, with any password masked."""
        if self.url:
            return mask_url(self.url)
        kw = self.redis.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _wire(self) -> _Wire:
        local = self._local
        pid = os.getpid()
        wire = local.wire
        if wire is None or local.pid != pid:
            # Not taken from the pool's in-use set: when the thread ends, its
            # local goes away and the connection is closed by garbage collection,
            # so a thread-per-request caller does not leak one connection each.
            wire = _Wire(self.redis.connection_pool.make_connection())
            local.wire = wire
            local.pid = pid
            with self._held_lock:
                if pid != self._held_pid:
                    self._held = weakref.WeakSet()
                    self._held_pid = pid
                self._held.add(wire.conn)
        return wire

    def call(self, *args: Any, retry: bool = True) -> Any:
        """Send one command on this thread's connection and return the raw reply.

        Network errors reconnect and, when ``retry`` is true (the caller's command
        is idempotent), resend once before raising.
        """
        wire = self._wire()
        try:
            return wire.request(args)
        except _NETWORK_ERRORS:
            if not retry:
                raise
        return wire.request(args)

    def server_version(self) -> tuple[int, ...]:
        if self._version is None:
            info = self.redis.info("server")
            raw = str(info.get("redis_version", "0.0.0"))
            parts = []
            for piece in raw.split(".")[:3]:
                digits = "".join(ch for ch in piece if ch.isdigit())
                parts.append(int(digits or 0))
            self._version = tuple(parts)
            if self._version < (6, 2):
                raise RedflowError(
                    f"Redis {raw} at {self.describe()} is too old: redflow-mp needs >= 6.2"
                )
        return self._version

    def close(self) -> None:
        """Close this process's connections (safe to call more than once)."""
        pid = os.getpid()
        with self._held_lock:
            held, self._held = list(self._held), weakref.WeakSet()
            owned = self._held_pid == pid
        if owned:
            for conn in held:
                with contextlib.suppress(Exception):  # best effort on a broken socket
                    conn.disconnect()
        self._local = _Local()
        self.redis.close()
        self.redis.connection_pool.disconnect()


def is_noscript(exc: ResponseError) -> bool:
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def is_oom(exc: ResponseError) -> bool:
    # Redis 6.2 reports a script whose first write was refused as a script error
    # wrapping "-OOM command not allowed ...".
    return (
        isinstance(exc, OutOfMemoryError)
        or "OOM command not allowed" in str(exc)
        or str(exc).startswith("OOM")
    )
